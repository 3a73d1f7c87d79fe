"""Data-parallel training on CPU: `torchrun --nproc_per_node 2` (gloo) runs `mondrian
train`, both processes train on their shards, and exactly one adapter version is saved
and registered (only the main process writes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import add_profile, add_short_advisor

from mondrian.training import registry
from mondrian.training.dataset import build_dataset

pytestmark = pytest.mark.model

TINY_CONFIG = Path(__file__).parents[2] / "configs" / "train" / "tiny.toml"


def test_two_process_gloo_run_saves_one_adapter(state, settings, tiny_checkpoint_factory, tmp_path):
    advisor_id = add_short_advisor(state)
    for i in range(4):
        add_profile(state, settings, i, advisor_id=advisor_id)
    dataset = tmp_path / "dataset"
    build_dataset(state, settings, advisor_id, dataset, val_fraction=0.25, augment=1)

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free local port: test runs may go side by side
        "--nproc_per_node",
        "2",
        "-m",
        "mondrian",
        "train",
        "--advisor",
        advisor_id,
        "--dataset",
        str(dataset),
        "--model",
        str(tiny_checkpoint_factory()),
        "--config",
        str(TINY_CONFIG),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--json",
    ]
    env = {**os.environ, "MONDRIAN_HOME": str(settings.home_dir), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    # Its own session, so that a hang can be ended with the workers, not just torchrun.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        # Under pytest's 600 s, so a hang ends here with the workers killed; a healthy run
        # takes a minute idle and several on a busy 2-core machine.
        stdout, stderr = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    seconds = time.perf_counter() - started
    print(f"\n2-process gloo run: {seconds:.1f} s")
    assert proc.returncode == 0, stderr[-3000:]

    # One JSON document on stdout: only the main process reports.
    report = json.loads(stdout)
    assert report["ref"] == f"{advisor_id}@v1" and report["activated"]

    versions = registry.list_versions(state, advisor_id)
    assert [v.ref for v in versions] == [f"{advisor_id}@v1"]
    assert sorted(p.name for p in (settings.adapters_dir / advisor_id).iterdir()) == ["v1"]
    meta = registry.verify_adapter_dir(versions[0].path)
    assert meta["training"]["processes"] == 2
    # 6 training examples, 2 per batch, sharded over 2 processes: 2 steps each.
    assert meta["metrics"]["steps"] == 2
    assert len(meta["metrics"]["val_loss"]) == 1 and meta["metrics"]["val_loss"][0] > 0
    rng_files = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "epoch-001").iterdir())
    assert {"rng-0.pt", "rng-1.pt", "optimizer.pt", "scheduler.pt", "state.json"} <= set(rng_files)
