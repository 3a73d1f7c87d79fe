"""Data-parallel training on CPU: `torchrun --nproc_per_node 2` (gloo) runs `mondrian
train`, both processes train on their shards, and exactly one adapter version is saved
and registered (only the main process writes)."""

from __future__ import annotations

import json

import pytest
from torchrun_helpers import run_two_processes, train_args, two_process_dataset

from mondrian.training import registry

pytestmark = pytest.mark.model


def test_two_process_gloo_run_saves_one_adapter(state, settings, tiny_checkpoint_factory, tmp_path):
    advisor_id, dataset = two_process_dataset(state, settings, tmp_path)
    args = train_args(advisor_id, dataset, tiny_checkpoint_factory(), tmp_path / "run")
    env = {"MONDRIAN_HOME": str(settings.home_dir)}
    result, seconds = run_two_processes(["-m", "mondrian"], args, env)
    stdout, stderr = result.stdout, result.stderr
    print(f"\n2-process gloo run: {seconds:.1f} s")
    assert result.returncode == 0, stderr[-3000:]

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
