"""The two-process CPU runs of `mondrian train` (tests/training/test_ddp.py and
test_ddp_fast.py): one advisor's data set, and `torchrun --nproc_per_node 2` (gloo) in its
own session, so that a hang ends with its workers killed, not just torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from training_helpers import add_profile, add_short_advisor

from mondrian.training.dataset import build_dataset

TINY_CONFIG = Path(__file__).parents[2] / "configs" / "train" / "tiny.toml"


def two_process_dataset(state, settings, tmp_path: Path) -> tuple[str, Path]:
    """An advisor with 4 profiles and its data set (6 training examples after augment)."""
    advisor_id = add_short_advisor(state)
    for i in range(4):
        add_profile(state, settings, i, advisor_id=advisor_id)
    dataset = tmp_path / "dataset"
    build_dataset(state, settings, advisor_id, dataset, val_fraction=0.25, augment=1)
    return advisor_id, dataset


def train_args(advisor_id: str, dataset: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """`train`'s arguments for one epoch of the tiny config on the CPU, JSON out."""
    return [
        "train",
        "--advisor",
        advisor_id,
        "--dataset",
        str(dataset),
        "--model",
        str(model),
        "--config",
        str(TINY_CONFIG),
        "--epochs",
        "1",
        *extra,
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--json",
    ]


def run_two_processes(
    target: list[str], args: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, float]:
    """`torchrun --standalone --nproc_per_node 2 TARGET ARGS` -> (its result, seconds).

    `--standalone` takes a free local port, so test runs may go side by side. The 540 s
    bound is under pytest's 600 s: a hang ends here; a healthy run takes a minute idle and
    several on a busy 2-core machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", *target, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    seconds = time.perf_counter() - started
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), seconds
