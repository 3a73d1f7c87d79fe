"""bench/kernel_ablation.py on the CPU: the tiny checkpoint, its two adapters, every kernel
set's decode step eagerly at rows 1 merged, rows 2 without adapters and rows 2 mixed, the
Triton kernels under the interpreter (TRITON_INTERPRET=1 must precede Triton's import: a
process of its own, as tests/backends/test_kernels.py runs them). Each kernel alone and all
four give the torch ops' logits, so the timed steps are the same computation; the JSON
and the table carry what the H200 run is read by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("triton")
pytestmark = pytest.mark.model

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "kernel_ablation.py"
SETS = [
    "none",
    "norm_linear",
    "rope_kv",
    "decode_attention",
    "residual_linear",
    "all_but_norm_linear",
    "all",
]
TUNED = ["tuned_gemv", "tuned_gemv_attention"]  # inductor's one-row decomposition: CUDA only
SHAPES = ["rows1_merged", "rows2_hot", "rows2_mixed"]


def test_every_kernel_set_decodes_the_torch_ops_logits(tiny_checkpoint_factory, tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    args = ["--arch", "tiny", "--checkpoint", str(tiny_checkpoint_factory()), "--out"]
    args += [str(tmp_path), "--rows", "2", "--bucket", "64", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "kernels_tiny.json").read_text())
    assert "eager" in result["timing"] and set(result["skipped"]) == set(TUNED)
    assert "tuned_gemv" in result["skipped"]["tuned_gemv"]
    assert result["fast_path_untouched"] is True  # its state of the first request
    assert all(isinstance(result["checked"][name], float) for name in SETS[1:5])
    assert list(result["forward_ms"]) == SHAPES
    for shape in SHAPES:
        assert list(result["forward_ms"][shape]) == SETS
        assert all(ms > 0 for ms in result["forward_ms"][shape].values())
        times = result["forward_ms"][shape]
        assert times[result["fastest"][shape]] == min(times.values())
        for name, diff in result["logits_diff_vs_none"][shape].items():
            assert diff <= 1e-5, f"{shape} {name}: {diff}"  # float32: the order of sums
    assert set(result["mixed_vs_hot"]) == set(SETS)
    assert set(result["mixed_vs_hot"]["all"]) == {
        "hot_ms",
        "mixed_ms",
        "step_slower_pct",
        "throughput_below_pct",
    }
    profiles = result["profile_rows1"]
    assert set(profiles) == {"none", "decode_attention", "all"} and profiles["none"]["kernels"] > 0
    assert 0 < len(profiles["all"]["top"]) <= 10
    table = (tmp_path / "kernels_tiny.md").read_text()
    assert "eager forwards on the CPU" in table
    assert all(f"| {name} |" in table for name in SETS)


def test_on_the_cpu_without_the_interpreter_only_torch_ops_are_timed(monkeypatch):
    import torch

    sys.path.insert(0, str(SCRIPT.parent))
    import kernel_ablation

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fast = SimpleNamespace(device=torch.device("cpu"))
    usable, skipped, checked = kernel_ablation._usable_sets(fast, kernel_ablation.SETS)
    assert usable == {"none": None} and checked == {}
    assert set(skipped) == set(SETS[1:] + TUNED) and "TRITON_INTERPRET=1" in skipped["all"]


def test_the_auto_rule_sums_each_sets_times_relative_to_the_torch_ops():
    sys.path.insert(0, str(SCRIPT.parent))
    import kernel_ablation

    times = {
        "rows1": {"none": 2.0, "decode_attention": 2.2, "tuned_gemv": 1.6},
        "rows32": {"none": 4.0, "decode_attention": 3.4, "tuned_gemv": 4.2},
    }
    # none 2.0, split-KV 1.1 + 0.85 = 1.95, tuned 0.8 + 1.05 = 1.85: slower at 32 rows, chosen
    assert kernel_ablation.lowest_relative_sum(times) == "tuned_gemv"
    times["rows32"]["tuned_gemv"] = 5.0  # 0.8 + 1.25 = 2.05
    assert kernel_ablation.lowest_relative_sum(times) == "decode_attention"
    times["rows32"]["decode_attention"] = 3.6  # a tie with none's 2.0: the fewer kernels
    assert kernel_ablation.lowest_relative_sum(times) == "none"
    assert kernel_ablation.lowest_relative_sum({"rows1": {"tuned_gemv": 1.0}}) is None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--arch", "tiny", "--sets", "none,fastest"], "unknown kernel set fastest"),
        (["--arch", "qwen2_5_vl_3b", "--checkpoint", "x"], "--checkpoint is for --arch tiny"),
        (["--arch", "tiny", "--profile"], "--profile is for --prefill-only"),
    ],
)
def test_bad_arguments_are_refused_before_any_model_is_built(args, said):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and said in done.stderr
    if "--sets" in args:
        assert "tuned_gemv_attention" in done.stderr  # the valid ones are listed
