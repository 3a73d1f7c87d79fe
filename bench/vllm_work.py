"""bench/vllm_bench.py's work folder: the saved checkpoint (`work/model`) and the random
LoRA adapters (`work/adapters/advisorI@v1`) every column serves, built once and reused by
later calls on the same machine so that every column runs the same weights.

`work/build.json` is written last, after the model and every adapter are on disk; a
folder without it (a call killed mid-save) or built for another arch, adapter count or
rank is built again from scratch.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path
from typing import Any

import gpu_bench  # the model and adapters of the fast path's bench

MARKER = "build.json"


def rank_for(arch: str) -> int:
    return 4 if arch == "tiny" else 16


def reusable(work: Path, arch: str, count: int) -> dict[str, Any] | None:
    """The marker of a complete build of this arch and adapter set, else None."""
    from mondrian import adapter_format
    from mondrian.errors import MondrianError

    try:
        built = json.loads((work / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if (built.get("arch"), len(built.get("adapters", [])), built.get("rank")) != (
        arch,
        count,
        rank_for(arch),
    ):
        return None
    if not (work / "model" / "config.json").is_file():
        return None
    try:
        for name in built["adapters"]:
            adapter_format.check_files(work / "adapters" / name, name)
    except MondrianError:
        return None
    return built


def prepare(work: Path, arch: str, count: int) -> dict[str, Any]:
    """The build record ({arch, adapters, rank, built_s, reused}) of `work`, building
    the checkpoint and adapters first unless a complete build is there."""
    built = reusable(work, arch, count)
    if built is not None:
        print(f"reusing {work}/model and adapters {built['adapters']}", flush=True)
        return {**built, "reused": True}
    started = time.perf_counter()
    (work / MARKER).unlink(missing_ok=True)
    for old in ("model", "adapters"):
        shutil.rmtree(work / old, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    names = _build(work, arch, count)
    built = {
        "arch": arch,
        "adapters": names,
        "rank": rank_for(arch),
        "built_s": round(time.perf_counter() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (work / MARKER).write_text(json.dumps(built, indent=1))
    print(f"built {work}/model and adapters {names} in {built['built_s']} s", flush=True)
    return {**built, "reused": False}


def _build(work: Path, arch: str, count: int) -> list[str]:
    import torch

    model_dir = work / "model"
    if arch == "tiny":
        from transformers import AutoModelForImageTextToText

        from mondrian.tiny.checkpoint import make_tiny

        make_tiny(model_dir, "qwen2_5_vl", seed=0)
        model = AutoModelForImageTextToText.from_pretrained(model_dir)
    else:
        # Built on the GPU (random init is slow on the CPU), saved, then given back.
        model, processor, _ = gpu_bench.build(arch, "cuda")
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        model.generation_config.save_pretrained(model_dir)
    names = gpu_bench.make_adapters(model, work / "adapters", count, rank_for(arch))
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return names
