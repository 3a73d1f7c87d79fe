"""Poisson arrivals through the service's batcher onto the fast path (bench/gpu_bench.py's
`poisson` section): requests arrive one at a time at exponential gaps (a Poisson process
of `rate` requests a second), spread over the adapters, constrained, stopping at their
stop tokens, each through `BatchingBackend.generate` from its own thread as a service job
would. A request arriving while a batch decodes joins it between two steps (into a free
row, or the batch grows: backends/transformers/engine/scheduler.py).

Reported per rate: throughput (generated tokens over the span from the first arrival to
the last answer), latency p50/p95/max from arrival to the whole answer (the batcher
delivers whole answers, so there is no first-token time), the batches the batcher
opened, how many times a running batch grew, and how many answers were valid critiques.

    python bench/arrivals.py --tiny    # CPU smoke test on a tiny checkpoint (seconds)
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def arrival_times(n: int, rate: float, seed: int) -> list[float]:
    """Seconds after the start at which each of `n` requests arrives (Poisson, `rate`/s)."""
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(n):
        now += rng.expovariate(rate)
        times.append(now)
    return times


def run_rate(backend: Any, requests: list[Any], rate: float, seed: int = 0) -> dict[str, Any]:
    """One scenario: `requests` arriving at `rate` per second through a fresh batcher."""
    from mondrian.service.batching import BatchingBackend

    # Growths are the fast path's (a batch that moved into a bigger state); a vLLM server
    # batches on its own and reports none.
    fast = backend.fast_path if backend.name == "transformers" else None
    grown_before = fast.growths if fast is not None else 0
    moved_before = fast.mode_moves if fast is not None else 0
    batcher = BatchingBackend(backend, max_rows=32)
    at = arrival_times(len(requests), rate, seed)
    answers: list[Any] = [None] * len(requests)
    done_at = [0.0] * len(requests)
    errors: list[str] = []
    start = time.perf_counter() + 0.05

    def client(i: int) -> None:
        time.sleep(max(0.0, start + at[i] - time.perf_counter()))
        try:
            (answers[i],) = batcher.generate([requests[i]])
        except Exception as exc:  # reported, not fatal: the other requests still count
            errors.append(f"{type(exc).__name__}: {exc}")
        done_at[i] = time.perf_counter()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    latencies = [done_at[i] - (start + at[i]) for i, a in enumerate(answers) if a is not None]
    tokens = sum(a.new_tokens for a in answers if a is not None)
    span = max(done_at) - (start + at[0])
    return {
        "rate_req_s": rate,
        "requests": len(requests),
        "answered": sum(a is not None for a in answers),
        "valid": sum(a is not None and a.critique is not None and a.stopped for a in answers),
        "tokens": tokens,
        "mean_tokens": tokens / max(1, len(latencies)),
        "span_s": span,
        "throughput_tok_s": tokens / span if span > 0 else None,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_max_s": max(latencies, default=float("nan")),
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "batches": batcher.batches,
        "growths": (fast.growths - grown_before) if fast is not None else None,
        # Of those, merged batches that moved into the mixed mode for another adapter.
        "mode_moves": (fast.mode_moves - moved_before) if fast is not None else None,
        "engines": sorted({a.engine for a in answers if a is not None and a.engine}),
        "errors": sorted(set(errors))[:3],
    }


def seed_for(rate: float) -> int:
    """The arrival times' seed of a rate: the same gaps for every engine at that rate."""
    return int(rate * 1000)


def poisson(
    backend: Any, requests_for: Any, names: list[str], n: int, rates: list[float]
) -> dict[str, Any]:
    """Every rate in turn on the same `n` requests (spread over `names`), warm: one
    request first so that no rate pays for the first compilation of a batch size alone.
    (bench/vllm_bench.py runs the same steps a rate at a time, within its time budget.)"""
    requests = requests_for(n, names)
    backend.generate(requests[:1])
    return {f"{rate:g}": run_rate(backend, requests, rate, seed=seed_for(rate)) for rate in rates}


def _tiny() -> None:
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root / "src"), str(root / "tests"), str(root / "bench")]
    from gpu_bench import bounded_decoder, requests_for

    from generation_helpers import make_lora
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.tiny.checkpoint import make_tiny

    work = Path(tempfile.mkdtemp(prefix="arrivals-"))
    base = make_tiny(work / "checkpoint", "qwen2_5_vl", 0)
    backend = TransformersBackend(str(base), device="cpu", max_pixels=64 * 28 * 28)
    backend.decoder = bounded_decoder(backend, 8)
    names = []
    for i in range(2):
        make_lora(base, work / f"advisor{i}@v1", i + 1)
        backend.load_adapter(f"advisor{i}@v1", work / f"advisor{i}@v1")
        names.append(f"advisor{i}@v1")
    backend.fast_path = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    for rate, result in poisson(backend, requests_for, names, 6, [2.0, 8.0]).items():
        print(rate, result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test")
    if parser.parse_args().tiny:
        _tiny()
