"""Data-parallel training on the fast engine (`--engine fast`), on CPU under `torchrun
--nproc_per_node 2` (gloo): one adapter version saved and registered, and the gradients
all-reduced: after each epoch both processes hold the same LoRA weights, though each
trained on its own shard (test_ddp.py is the stock engine's run)."""

from __future__ import annotations

import json

import pytest
from torchrun_helpers import run_two_processes, train_args, two_process_dataset

from mondrian.training import registry

pytestmark = pytest.mark.model

# `mondrian train` with each process's LoRA weights written beside every checkpoint
# (into WEIGHTS_DIR), so that the test can compare the processes.
WORKER = """
import os, sys
import torch
from mondrian.cli.main import main
from mondrian.training import train as train_mod

saved = train_mod.save_checkpoint

def save_checkpoint(run_dir, state, accelerator, model, *rest):
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    name = f"epoch{state.epochs_done}-rank{accelerator.process_index}.pt"
    torch.save(weights, os.path.join(os.environ["WEIGHTS_DIR"], name))
    return saved(run_dir, state, accelerator, model, *rest)

train_mod.save_checkpoint = save_checkpoint
sys.exit(main(sys.argv[1:]))
"""


def test_two_process_fast_run_syncs_and_saves_one_adapter(
    state, settings, tiny_checkpoint_factory, tmp_path
):
    import torch

    advisor_id, dataset = two_process_dataset(state, settings, tmp_path)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()

    extra = ("--rank", "4", "--engine", "fast")
    args = train_args(advisor_id, dataset, tiny_checkpoint_factory(), tmp_path / "run", *extra)
    env = {"MONDRIAN_HOME": str(settings.home_dir), "WEIGHTS_DIR": str(weights_dir)}
    result, seconds = run_two_processes([str(worker)], args, env)
    stdout, stderr = result.stdout, result.stderr
    print(f"\n2-process gloo run, fast engine: {seconds:.1f} s")
    assert result.returncode == 0, stderr[-3000:]

    report = json.loads(stdout)
    assert report["ref"] == f"{advisor_id}@v1" and report["activated"]
    versions = registry.list_versions(state, advisor_id)
    assert [v.ref for v in versions] == [f"{advisor_id}@v1"]
    meta = registry.verify_adapter_dir(versions[0].path)
    assert meta["training"]["processes"] == 2 and meta["training"]["engine"] == "fast"
    assert meta["metrics"]["steps"] == 2 and meta["metrics"]["updates"] == 2

    rank0 = torch.load(weights_dir / "epoch1-rank0.pt")
    rank1 = torch.load(weights_dir / "epoch1-rank1.pt")
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    # Trained (B left its zero init) and identical on both processes: averaged gradients.
    assert any(bool(w.abs().sum() > 0) for n, w in rank0.items() if "lora_B" in n)
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0)
