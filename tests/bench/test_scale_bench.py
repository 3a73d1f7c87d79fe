"""bench/scale_bench.py: its table and its process handling (default suite), and its CPU
smoke mode's training rows end to end: N=1 and N=2 under torchrun with gloo (marker
`slow`). Its serving row runs in tests/vllm/test_scale_serving.py (marker `vllm`)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import scale_procs  # noqa: E402
import scale_table  # noqa: E402
from scale_runs import left_behind, run_bench  # noqa: E402

from mondrian.backends.vllm.command import NVLS_OFF_ENV  # noqa: E402


def test_every_child_gets_nvlink_multicast_off_whatever_the_parent_says(monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    env = scale_procs.child_env({"NCCL_NVLS_ENABLE": "1", "MONDRIAN_HOME": "/x"})
    assert {k: env[k] for k in NVLS_OFF_ENV} == NVLS_OFF_ENV
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["MONDRIAN_HOME"] == "/x"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT / "src")
    assert "PYTHONPATH" not in scale_procs.child_env(own_src=False)


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed and not yet reaped by init, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_ends_the_whole_process_group(tmp_path):
    children = scale_procs.Children(tmp_path)
    # A parent that ignores SIGTERM, with a child of its own: both must go.
    script = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(p.pid, flush=True); time.sleep(600)"
    )
    out = tmp_path / "pid.txt"
    proc, _ = children.start(
        "sleeper", [sys.executable, "-c", script], dict(os.environ), stdout=out
    )
    deadline = time.monotonic() + 30
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(out.read_text())
    scale_procs.STOP_GRACE_S, saved = 1.0, scale_procs.STOP_GRACE_S
    try:
        children.stop_all()
    finally:
        scale_procs.STOP_GRACE_S = saved
    assert proc.poll() is not None and not children.running
    gone_by = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while _running(grandchild) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not _running(grandchild)
    assert len(children.commands) == 1 and "time.sleep(600)" in children.commands[0]


def _serve(n: int, critiques_s: float | None, status: str = "ok") -> dict:
    if status != "ok":
        return {"status": status, "why": "time budget: 10 s left\nof | it"}
    return {
        "status": "ok",
        "parallel": "data",
        "requests": 64,
        "clients": 64,
        "service_concurrency": 64,
        "text_chars": 40,
        "critiques_s": critiques_s,
        "tok_s": critiques_s * 400,
        "latency_p50_s": 1.0,
        "latency_p95_s": 2.0,
        "valid": 64,
        "calibrated": 63,
        "server_ready_s": 200.0,
    }


def test_table_gives_speedup_efficiency_and_the_goal_and_says_why_a_row_is_missing(tmp_path):
    data = {
        "arch": "qwen2_5_vl_3b",
        "env": {"device": "NVIDIA H200", "gpus_seen": 4},
        "rows": {
            "serve/1": _serve(1, 10.0),
            "serve/2": _serve(2, 17.0),
            "serve/4": _serve(4, None, "skipped"),
            "train/1": {
                "status": "ok",
                "processes": 1,
                "device": "cuda:0",
                "steps": 96,
                "steps_s": 4.0,
                "examples_s": 4.0,
                "val_loss": 2.5,
                "versions": ["ansel@v1"],
                "one_version": True,
                "wall_s": 80.0,
            },
            "train/2": {"status": "failed", "why": "RuntimeError: boom"},
        },
    }
    (tmp_path / "scale_bench_qwen2_5_vl_3b.json").write_text(json.dumps(data))
    text = scale_table.table(tmp_path)
    serve2 = next(line for line in text.splitlines() if line.startswith("| 2 | data"))
    assert "1.70× (goal ≥ 1.8×: not met)" in serve2 and "85%" in serve2
    assert "64/64 | 63/64" in serve2
    skipped = next(line for line in text.splitlines() if line.startswith("| 4 |"))
    assert "skipped: time budget: 10 s left of \\| it" in skipped  # one line, pipe escaped
    assert "| 2 | failed: RuntimeError: boom |" in text
    assert "ansel@v1 (one)" in text and "strings bounded at 40 characters" in text


def test_a_row_the_budget_or_the_host_cannot_hold_is_skipped_with_why():
    import scale_bench

    args = scale_bench.parse_args(["--budget-s", "100", "--serve-reserve-s", "300"])
    assert "time budget" in scale_bench.skip_reason(args, "serve", 1, gpus_seen=8)
    args = scale_bench.parse_args(["--budget-s", "1000"])
    assert scale_bench.skip_reason(args, "serve", 2, gpus_seen=2) is None
    assert scale_bench.skip_reason(args, "train", 4, gpus_seen=2) == "4 GPUs asked, 2 seen"
    tiny = scale_bench.parse_args(["--arch", "tiny", "--budget-s", "1000"])
    assert scale_bench.skip_reason(tiny, "train", 2, gpus_seen=0) is None  # gloo processes


# --- the CPU smoke mode's training rows ---------------------------------------------------


@pytest.mark.slow
def test_smoke_training_at_one_and_two_processes(tmp_path):
    data, commands = run_bench(
        tmp_path, "--parts", "train", "--gpus", "1,2", "--train-reserve-s", "30", timeout=1500
    )
    one, two = data["rows"]["train/1"], data["rows"]["train/2"]
    for n, row in ((1, one), (2, two)):
        assert row["status"] == "ok", row
        assert row["processes"] == n and row["one_version"] and row["versions"] == ["ansel@v1"]
        assert math.isfinite(row["val_loss"]) and row["val_loss"] > 0
        assert row["examples_s"] > 0 and row["steps_s"] > 0
    # The same data and epochs: 8 training examples, 2 a step per process, 2 epochs.
    assert data["dataset"]["train_examples"] == 8
    assert (one["steps"], two["steps"]) == (8, 4)
    assert commands.count("torch.distributed.run --standalone --nproc_per_node") == 2
    assert left_behind(tmp_path / "work") == []
