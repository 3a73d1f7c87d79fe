"""One row of bench/vllm_bench.py: a workload (median of timed `generate` calls after a
warm-up) or one Poisson rate (bench/arrivals.py), with the requests in flight when the
backend is a vLLM server's (`flight`: its CountingClient and URL, bench/vllm_serve.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import gpu_bench  # the prompts of the fast path's bench


def adapters_for(kind: str, rows: int, names: list[str]) -> list[str | None]:
    if kind == "base":
        return [None] * rows
    if kind == "one":
        return [names[0]] * rows
    return [names[i % len(names)] for i in range(rows)]


@contextlib.contextmanager
def in_flight(flight: Any, into: dict[str, Any]) -> Iterator[None]:
    """Fill `into["in_flight"]` with the peaks of the block (nothing for the fast path)."""
    if flight is None:
        yield
        return
    from vllm_serve import ServerGauge

    client, url = flight
    client.reset()
    with ServerGauge(url) as gauge:
        yield
    into["in_flight"] = {"client_peak": client.peak, **gauge.peaks()}


def run_workload(
    backend: Any,
    rows: int,
    kind: str,
    names: list[str],
    constrained: bool,
    args: Any,
    budget: Any,
    flight: Any,
) -> dict[str, Any]:
    """Median of --repeats timed calls after one warm-up (fewer when the warm-up says
    they would not fit the budget); validity and calibration on the median call's answers."""
    kw: dict[str, Any] = {"constrained": constrained}
    if not constrained:
        kw["max_new_tokens"] = args.free_tokens
    requests = gpu_bench.requests_for(rows, adapters_for(kind, rows, names), **kw)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    with in_flight(flight, result):
        backend.generate(requests)  # warm-up: graphs, compiled passes, the server's first batch
        warm = time.perf_counter() - started
        repeats = max(1, min(args.repeats, int(budget.left() // max(warm, 1e-3))))
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            gens = backend.generate(requests)
            runs.append((time.perf_counter() - t0, gens))
    runs.sort(key=lambda r: r[0])
    seconds, gens = runs[len(runs) // 2]
    tokens = sum(g.new_tokens for g in gens)
    result = {
        "s": round(seconds, 3),
        "s_all": [round(r[0], 3) for r in runs],
        "repeats": repeats,
        "rows": rows,
        "tokens": tokens,
        "tok_s": round(tokens / seconds, 1),
        "stopped": sum(g.stopped for g in gens),
        **result,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if constrained:
        result["valid"] = sum(g.critique is not None for g in gens)
        result["calibrated"] = sum(
            bool(g.expected_scores) and all(v is not None for v in g.expected_scores.values())
            for g in gens
        )
    return result


def warm_poisson(backend: Any, names: list[str], n: int) -> list[Any]:
    """bench/arrivals.py's `poisson` requests, after its one warm-up request."""
    requests = gpu_bench.requests_for(n, names)
    backend.generate(requests[:1])
    return requests


def poisson_rate(backend: Any, requests: list[Any], rate: float, flight: Any) -> dict[str, Any]:
    """One rate of bench/arrivals.py's scenario, with its seed (the same gaps in every
    column); a stop honoured is part of `valid` there."""
    from arrivals import run_rate, seed_for

    started = time.perf_counter()
    extra: dict[str, Any] = {}
    with in_flight(flight, extra):
        row = run_rate(backend, requests, rate, seed=seed_for(rate))
    return {**row, **extra, "wall_s": round(time.perf_counter() - started, 1)}
