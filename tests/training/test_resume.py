"""A run interrupted mid-epoch and resumed with --resume ends exactly where an
uninterrupted run ends: same losses step by step, same adapter weights (the checkpoint
carries adapter, optimizer, scheduler, RNG and step; dropout is on, so the RNG matters)."""

from __future__ import annotations

import pytest
from training_helpers import add_profile, add_short_advisor

from mondrian.errors import InvalidInput
from mondrian.training.config import TrainConfig
from mondrian.training.dataset import build_dataset

pytestmark = pytest.mark.model


class Interrupted(Exception):
    pass


def test_resume_matches_an_uninterrupted_run(
    state, settings, tiny_checkpoint_factory, tmp_path, monkeypatch, one_thread
):
    import torch
    from safetensors.torch import load_file

    from mondrian.training import train as train_mod

    advisor_id = add_short_advisor(state)
    for i in range(3):
        add_profile(state, settings, i, advisor_id=advisor_id)
    dataset = tmp_path / "dataset"
    manifest = build_dataset(state, settings, advisor_id, dataset, val_fraction=0.34)
    assert manifest["splits"]["train"]["examples"] == 2
    cfg = TrainConfig(
        model=str(tiny_checkpoint_factory()),
        rank=4,
        alpha=8,
        dropout=0.1,
        lr=1e-3,
        epochs=3,
        batch_size=1,
        max_pixels=3136,
        device="cpu",
        warmup_ratio=0.2,
    )

    def run(run_dir, **kwargs):
        return train_mod.train(
            cfg,
            advisor_id=advisor_id,
            dataset_dir=dataset,
            settings=settings,
            run_dir=run_dir,
            progress=False,
            **kwargs,
        )

    whole = run(tmp_path / "whole")

    # Die on the first step of epoch 3 (steps 1-4 are epochs 1 and 2).
    real_check = train_mod.check_batch_images
    calls = []

    def dies_in_epoch_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted
        return real_check(*args, **kwargs)

    monkeypatch.setattr(train_mod, "check_batch_images", dies_in_epoch_three)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut")
    monkeypatch.setattr(train_mod, "check_batch_images", real_check)
    checkpoints = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert checkpoints == ["epoch-001", "epoch-002"]

    with pytest.raises(InvalidInput, match="--resume"):
        run(tmp_path / "cut")
    resumed = run(tmp_path / "cut", resume=True)

    assert resumed.state.step == whole.state.step == 6
    assert resumed.state.step_losses == whole.state.step_losses
    assert resumed.state.val_loss == whole.state.val_loss
    assert (whole.adapter.version, resumed.adapter.version) == (1, 2)
    a = load_file(str(whole.adapter.path / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The run is finished: running it again is refused rather than publishing twice.
    with pytest.raises(InvalidInput, match="already finished"):
        run(tmp_path / "cut", resume=True)
