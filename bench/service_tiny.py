"""Throughput and latency of `POST /analyze` with the tiny model, over real HTTP.

Starts the service (uvicorn, 127.0.0.1 only, a free port) in this process, warms it up,
then sends a bounded number of requests: first one at a time, then from several client
threads at once (the queue serialises them on the one model worker), and prints
requests/s and latency percentiles for each.

    .venv/bin/python bench/service_tiny.py                      # schema bounds of the tests
    .venv/bin/python bench/service_tiny.py --full-schema        # the schema's real bounds
    .venv/bin/python bench/service_tiny.py --requests 40 --concurrency 4 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

MAX_REQUESTS = 1000
PHOTO = Path(__file__).resolve().parents[1] / "tests" / "assets" / "photos" / "chelsea.jpg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def run_phase(url: str, photo: bytes, total: int, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                started = time.perf_counter()
                response = client.post(
                    "/analyze",
                    files={"image": ("chelsea.jpg", photo, "image/jpeg")},
                    data={"advisor": "ansel"},
                )
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies if response.status_code == 200 else errors).append(
                        elapsed if response.status_code == 200 else response.status_code
                    )

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(percentile(latencies, 50), 4) if latencies else None,
        "p95_s": round(percentile(latencies, 95), 4) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a tiny checkpoint (default: build one)")
    parser.add_argument("--requests", type=int, default=30, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=4, help="clients in phase two")
    parser.add_argument(
        "--full-schema",
        action="store_true",
        help="the critique schema's real string and list bounds (default: the tests' "
        "short ones, max_text_chars=8, max_list_items=1)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 64:
        parser.error(f"--requests must be 1..{MAX_REQUESTS} and --concurrency 1..64")

    import httpx
    import torch
    import uvicorn

    from mondrian.backends.protocol import create_backend
    from mondrian.config import Settings
    from mondrian.service.app import create_app
    from mondrian.service.options import ServiceOptions
    from mondrian.tiny.checkpoint import make_tiny

    workdir = Path(tempfile.mkdtemp(prefix="mondrian-bench-"))
    model = args.model or make_tiny(workdir / "tiny")
    settings = Settings(
        home=workdir / "home", model=str(model), backend="transformers", device="cpu"
    )
    limits = {} if args.full_schema else {"max_text_chars": 8, "max_list_items": 1}
    backend = create_backend(settings, **limits)
    options = ServiceOptions(queue_size=max(16, args.concurrency))
    app = create_app(settings, backend, options=options)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            print("the server did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)

    photo = PHOTO.read_bytes()
    load_before = os.getloadavg()
    try:
        run_phase(url, photo, 2, 1)  # warm-up: grammar compilation, first-call allocations
        phases = [
            run_phase(url, photo, args.requests, 1),
            run_phase(url, photo, args.requests, args.concurrency),
        ]
        health = httpx.get(f"{url}/health").json()
    finally:
        server.should_exit = True
        thread.join(30)

    result = {
        "model": "tiny qwen2_5_vl (make_tiny, seed 0)",
        "schema_bounds": "full" if args.full_schema else "max_text_chars=8, max_list_items=1",
        "device": health["device"],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # Other processes on the machine skew every number here; the load says how much.
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "phases": phases,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']}, schema bounds: {result['schema_bounds']}, {result['device']}")
        print(f"  load average (1 min) before/after: {result['loadavg_1m_before_after']}")
        for phase in phases:
            print(
                f"  concurrency {phase['concurrency']}: {phase['ok']}/{phase['requests']} ok, "
                f"{phase['requests_per_s']:.2f} req/s, p50 {phase['p50_s']:.3f} s, "
                f"p95 {phase['p95_s']:.3f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
