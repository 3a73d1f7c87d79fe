"""bench/train_bench.py on the tiny checkpoint on the CPU, `--profile` on: every step row
(fast and stock, activations kept and recomputed) says whether its halves ran compiled,
the fast rows carry the profiler's summary, and both full runs ran (a few examples, one
epoch: the bench's logic, not its figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.model


def test_the_tiny_bench_runs_with_the_profile(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(ROOT / "bench" / "train_bench.py"),
        "--arch", "tiny", "--out", str(tmp_path), "--profile",
        "--examples", "3", "--epochs", "1", "--answer-tokens", "32",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step ms, activations kept" in done.stdout

    data = json.loads((tmp_path / "train_tiny.json").read_text())
    rows = data["step"]
    assert [(r["engine"], r["gradient_checkpointing"]) for r in rows] == [
        ("fast", False),
        ("fast", True),
        ("stock", False),
        ("stock", True),
    ]  # no eager row: on the CPU `auto` compiles nothing
    assert all(r["compiled"] is False and r["variant"] == "train" for r in rows)
    vision = ("vision_varlen", "vision_compiled", "vision_patch_product")
    assert all(r[key] is False for r in rows for key in vision)
    assert all(r["ms"] > 0 and r["first_step_s"] > 0 for r in rows)
    for r in rows:
        if r["engine"] == "stock":
            assert "profile" not in r
            continue
        profile = r["profile"]
        assert profile["wall_ms"] > 0 and profile["cpu_ops"] > 0
        assert profile["cuda_kernels"] == 0 and profile["top_cuda_kernels"] == []
        top = profile["top_cpu_ops"]
        assert 0 < len(top) <= 15
        assert [t["self_ms"] for t in top] == sorted((t["self_ms"] for t in top), reverse=True)
    assert [r["engine"] for r in data["run"]] == ["fast", "stock"]
    assert all("skipped" not in r and r["steps"] == 2 for r in data["run"])
