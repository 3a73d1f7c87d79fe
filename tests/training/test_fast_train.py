"""`train()` with `engine="fast"` (training/fast_engine.py) on a tiny checkpoint in float32:
the same run as the stock engine step for step (accumulation, clipping, schedule,
validation), the same adapter files, recorded as trained by the fast engine, registered and
served by the transformers backend's stock and fast paths; and `--resume` of a fast run
ends where an uninterrupted one ends (dropout on, so the RNG states matter)."""

from __future__ import annotations

import json

import pytest
from training_helpers import add_profile, add_short_advisor

from generation_helpers import critique_request, same_as_stock
from mondrian.training.config import TrainConfig
from mondrian.training.dataset import build_dataset

pytestmark = pytest.mark.model


@pytest.fixture
def dataset(state, settings, tmp_path):
    advisor_id = add_short_advisor(state)
    for i in range(3):
        add_profile(state, settings, i, advisor_id=advisor_id)
    out = tmp_path / "dataset"
    manifest = build_dataset(state, settings, advisor_id, out, val_fraction=0.34)
    assert manifest["splits"]["train"]["examples"] == 2
    return advisor_id, out


def _config(checkpoint, **overrides) -> TrainConfig:
    values = dict(
        model=str(checkpoint),
        rank=4,
        alpha=8,
        dropout=0.0,
        lr=1e-3,
        epochs=2,
        grad_accum=2,
        max_grad_norm=0.5,
        max_pixels=3136,
        device="cpu",
        dtype="float32",
        warmup_ratio=0.2,
    )
    return TrainConfig(**{**values, **overrides})


def _run(cfg, dataset, settings, run_dir, **kwargs):
    from mondrian.training.train import train

    advisor_id, dataset_dir = dataset
    return train(
        cfg,
        advisor_id=advisor_id,
        dataset_dir=dataset_dir,
        settings=settings,
        run_dir=run_dir,
        progress=False,
        **kwargs,
    )


def test_a_fast_run_is_the_stock_run_and_serves(
    dataset, settings, tiny_checkpoint_factory, tmp_path, one_thread
):
    import torch
    from safetensors.torch import load_file

    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.training import registry

    checkpoint = tiny_checkpoint_factory()
    stock = _run(_config(checkpoint, engine="stock"), dataset, settings, tmp_path / "stock")
    fast = _run(_config(checkpoint, engine="fast"), dataset, settings, tmp_path / "fast")
    assert fast.state.step == stock.state.step == 4 and fast.state.updates == 2
    assert fast.state.step_losses == pytest.approx(stock.state.step_losses, rel=1e-4)
    assert fast.state.val_loss == pytest.approx(stock.state.val_loss, rel=1e-4)
    assert fast.state.step_losses[-1] < fast.state.step_losses[0]  # it learned

    # The same files: PEFT's keys and shapes, the same adapter_config.json.
    a = load_file(str(stock.adapter.path / "adapter_model.safetensors"))
    b = load_file(str(fast.adapter.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-5, msg=key)
    config = "adapter_config.json"
    assert json.loads((fast.adapter.path / config).read_text()) == json.loads(
        (stock.adapter.path / config).read_text()
    )
    meta = registry.verify_adapter_dir(fast.adapter.path)
    assert meta["hyperparameters"]["engine"] == meta["training"]["engine"] == "fast"
    assert registry.verify_adapter_dir(stock.adapter.path)["training"]["engine"] == "stock"
    assert (fast.adapter.path / "loss_curve.svg").is_file()

    backend = TransformersBackend(str(checkpoint), device="cpu", max_text_chars=24)
    backend.load_adapter(fast.adapter.ref, fast.adapter.path)
    path = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    request = critique_request(0, adapter=fast.adapter.ref, max_new_tokens=24)
    (served,) = same_as_stock(backend, path, [request])
    assert served.new_tokens > 0


class Interrupted(Exception):
    pass


def test_a_fast_run_resumes_where_it_stopped(
    dataset, settings, tiny_checkpoint_factory, tmp_path, monkeypatch, one_thread
):
    import torch
    from safetensors.torch import load_file

    from mondrian.training import train as train_mod

    cfg = _config(tiny_checkpoint_factory(), engine="fast", dropout=0.1, epochs=3, grad_accum=1)
    whole = _run(cfg, dataset, settings, tmp_path / "whole")

    real_check = train_mod.check_batch_images
    calls = []

    def dies_in_epoch_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted
        return real_check(*args, **kwargs)

    monkeypatch.setattr(train_mod, "check_batch_images", dies_in_epoch_three)
    with pytest.raises(Interrupted):
        _run(cfg, dataset, settings, tmp_path / "cut")
    monkeypatch.setattr(train_mod, "check_batch_images", real_check)
    resumed = _run(cfg, dataset, settings, tmp_path / "cut", resume=True)

    assert resumed.state.step == whole.state.step == 6
    assert resumed.state.step_losses == whole.state.step_losses
    assert resumed.state.val_loss == whole.state.val_loss
    a = load_file(str(whole.adapter.path / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
