"""bench/vllm_bench.py's command line: which columns and rows this call runs, its time
budget, and defaults that differ for the tiny CPU smoke test (few rows, short answers)."""

from __future__ import annotations

import argparse
import sys

import gpu_bench
from vllm_table import COLUMNS, WORKLOADS

# arch "tiny" (vLLM's CPU build on a 2-core machine) / the real ones
DEFAULTS = {
    "batch": (4, 32),
    "text_chars": (8, 40),
    "free_tokens": (32, 600),
    "repeats": (1, 3),
    "poisson_requests": (8, 64),
}


def parser(description: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--arch", default="qwen2_5_vl_3b", choices=[*gpu_bench.ARCHES, "tiny"])
    p.add_argument("--out", default=out, help="the JSON (accumulated over calls) and logs")
    p.add_argument("--work", default="bench/vllm-work", help="checkpoint and adapters, reused")
    p.add_argument("--vllm-python", default=sys.executable, help="python that has vllm")
    p.add_argument("--columns", default=",".join(COLUMNS), help="comma list: " + ", ".join(COLUMNS))
    p.add_argument(
        "--workloads",
        default=",".join(n for n, *_ in WORKLOADS),
        help="comma list of the workload rows to run (empty: none)",
    )
    p.add_argument("--skip-poisson", action="store_true", help="no Poisson rows this call")
    p.add_argument("--only-poisson", action="store_true", help="the Poisson rows only")
    p.add_argument("--batch", type=int, default=None, help="rows of the b32 workloads")
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--text-chars", type=int, default=None, help="the schema's string bound")
    p.add_argument("--free-tokens", type=int, default=None, help="unconstrained rows' limit")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--server-timeout", type=float, default=420.0)
    p.add_argument("--poisson-rates", default="2,8,32", help="req/s; empty: none")
    p.add_argument("--poisson-requests", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=540.0, help="this call's time budget")
    p.add_argument(
        "--kernels",
        default="auto",
        help="the fast column's Triton decode kernels: a fast_kernels value (config.py)",
    )
    p.add_argument("--table", action="store_true", help="print the table of --out's JSON")
    return p


def finish(args: argparse.Namespace) -> argparse.Namespace:
    """Per-arch defaults filled in; lists parsed; a bad name exits with a message."""
    tiny = args.arch == "tiny"
    for key, (small, full) in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else full)
    args.columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    known = {n for n, *_ in WORKLOADS}
    for given, allowed, flag in (
        (args.columns, set(COLUMNS), "--columns"),
        (args.workloads, known, "--workloads"),
    ):
        unknown = [g for g in given if g not in allowed]
        if unknown:
            sys.exit(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    if args.skip_poisson and args.only_poisson:
        sys.exit("--skip-poisson and --only-poisson exclude each other")
    if args.skip_poisson:
        args.poisson_rates = ""
    if args.only_poisson:
        args.workloads = []
    # the fast column first: it gives the GPU back before a server takes it
    args.columns = [c for c in COLUMNS if c in args.columns]
    return args
