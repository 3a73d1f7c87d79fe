"""One training step under torch.profiler, summarised as plain JSON numbers
(bench/train_bench.py's `--profile`): where a step's time goes, CPU side and GPU side,
without a trace file to carry back from the device."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile_step(step: Callable[[], Any], top: int = 15) -> dict[str, Any]:
    """One `step()` under torch.profiler: where its time goes, as plain numbers."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    _sync()
    with profiler(activities=activities) as prof:
        started = time.perf_counter()
        step()
        _sync()
        wall_s = time.perf_counter() - started
    events = prof.events()
    kernels: dict[str, list[float]] = {}  # name -> [total us, count]
    for event in events:
        if event.device_type == DeviceType.CUDA:
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.time_range.elapsed_us()
            entry[1] += 1
    kernel_us = sum(us for us, _ in kernels.values())
    ranked = sorted(kernels.items(), key=lambda item: -item[1][0])[:top]
    cpu_ops = sorted(
        (a for a in prof.key_averages() if a.device_type == DeviceType.CPU),
        key=lambda a: -a.self_cpu_time_total,
    )[:top]
    return {
        "torch": torch.__version__,
        "wall_ms": wall_s * 1e3,  # the profiled step, profiler overhead included
        "cuda_kernel_ms": kernel_us / 1e3,
        "cuda_kernels": sum(int(n) for _, n in kernels.values()),
        "cuda_busy_fraction": kernel_us / 1e3 / (wall_s * 1e3) if kernels else None,
        "top_cuda_kernels": [
            {"name": name, "ms": us / 1e3, "count": int(n)} for name, (us, n) in ranked
        ],
        "cpu_ops": sum(1 for e in events if e.device_type == DeviceType.CPU),
        "top_cpu_ops": [
            {"name": a.key, "self_ms": a.self_cpu_time_total / 1e3, "count": a.count}
            for a in cpu_ops
        ],
    }
