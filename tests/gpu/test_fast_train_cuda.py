"""The fast training engine (training/fast_engine.py) on CUDA in bfloat16, where `mondrian
train` uses it by default (`--engine auto`).

tests/training/test_fast_engine.py holds the engine to the PEFT path exactly in float32 on
the CPU; here the base is bfloat16 (PEFT keeps the LoRA in float32 and computes it in float32,
the engine in bfloat16), flash attention runs, and the tolerances are loose: the loss within
2%, and each LoRA gradient within 10% of the PEFT one in norm and pointing the same way
(cosine similarity 0.98 or more), with the layer halves eager and compiled by inductor
(training/fast_halves.py; also recomputed under gradient checkpointing, whole layers, and
through inductor's Python wrapper as well as its C++ one, the default), the compiled ones
without falling back; the
vision tower (both paths: one model) runs the serving engine's varlen attention
(training/fast_vision.py). Then a short `train()` on the default engine (compiled,
`compile` auto) publishes an adapter recorded as trained by the fast engine, and
its loss goes down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lora_helpers import randomise_lora

pytestmark = pytest.mark.gpu

LOSS_REL = 0.02
GRAD_NORM_REL = 0.10
GRAD_COSINE = 0.98
PIXELS = 64 * 28 * 28


def batch_of(processor: Any, root: Path, rows: int = 2) -> dict[str, Any]:
    """A padded batch of `rows` examples on random photos, as the trainer encodes them."""
    import numpy as np
    from PIL import Image

    from mondrian.advisors import get_shipped
    from mondrian.training.collate import Collator, ExampleEncoder
    from mondrian.training.dataset import example_record

    encoder = ExampleEncoder(processor, PIXELS, 4096)
    examples = []
    for i in range(rows):
        pixels = np.random.default_rng(i).integers(0, 256, (160 + 32 * i, 200, 3), np.uint8)
        path = root / f"photo-{i}.jpg"
        Image.fromarray(pixels).save(path)
        text = "A quiet field, well composed. " * (3 + 4 * i)
        record = example_record(
            get_shipped("ansel"),
            str(path),
            text,
            image_hash=f"h{i}",
            source="portfolio",
            augmentation_index=0,
        )
        examples.append(encoder.encode(record))
    return Collator(processor.tokenizer.pad_token_id)(examples)


def compare_step(
    checkpoint: Path,
    root: Path,
    device: str,
    dtype: str,
    *,
    compile: str = "off",
    checkpointing: bool = False,
) -> list[dict[str, float]]:
    """One loss and backward through the stock PEFT model and through the fast engine, on
    a LoRA with random B (PEFT's init has B = 0): the losses and, per LoRA tensor, the
    gradients' relative norm difference and cosine similarity. `compile`: off, on (the
    halves, their kernels launched by inductor's C++ wrapper: the default), layer (each
    whole layer one compiled graph), or python (the halves through inductor's Python
    wrapper: `compile_launch`). The engine runs three times, the last one measured (the
    compiled graphs' later calls, past any first-call work)."""
    import torch

    from mondrian.training.config import TrainConfig
    from mondrian.training.fast_engine import FastEngine
    from mondrian.training.setup import add_lora, load_base
    from mondrian.training.train import answer_loss

    cfg = TrainConfig(model=str(checkpoint), rank=8, alpha=16, dropout=0.0, dtype=dtype)
    processor, model = load_base(cfg, torch.device(device))
    model = add_lora(model, cfg)
    randomise_lora(model, 0)
    batch = batch_of(processor, root)
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(getattr(torch, dtype))
    model.train()
    unit = "layer" if compile == "layer" else "halves"
    launch = "python" if compile == "python" else "cpp"
    engine = FastEngine(
        model,
        dropout=0.0,
        compile="off" if compile == "off" else "on",
        compile_unit=unit,
        compile_launch=launch,
        checkpointing=checkpointing,
    )
    results = []
    for forward in (model, engine, engine, engine):
        model.zero_grad(set_to_none=True)
        loss = answer_loss(forward, batch)
        loss.backward()
        grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((float(loss.detach()), grads))
    (stock_loss, stock), *_, (fast_loss, fast) = results
    assert engine.compiled == (compile != "off"), "the compiled halves fell back to eager"
    assert not engine.compiled or engine.halves.unit == unit, "the compiled layers fell back"
    assert not engine.compiled or engine.halves.launch == launch
    assert engine.vision.varlen, "the vision tower fell back to transformers' attention"
    rows = [{"name": "loss", "stock": stock_loss, "fast": fast_loss}]
    for name, g in stock.items():
        f = fast[name]
        rows.append(
            {
                "name": name,
                "norm_rel": float((f.norm() - g.norm()).abs() / g.norm().clamp_min(1e-12)),
                "cosine": float(torch.nn.functional.cosine_similarity(f.flatten(), g.flatten(), 0)),
            }
        )
    return rows


@pytest.mark.parametrize(
    ("arch", "compile", "checkpointing"),
    [
        ("qwen2_5_vl", "off", False),
        ("qwen3_vl", "off", False),
        ("qwen2_5_vl", "on", False),
        ("qwen3_vl", "on", False),
        ("qwen2_5_vl", "on", True),
        ("qwen2_5_vl", "layer", False),
        ("qwen3_vl", "layer", True),
        ("qwen2_5_vl", "python", False),
    ],
)
def test_bf16_step_is_close_to_the_peft_path(
    arch, compile, checkpointing, tiny_checkpoint_factory, tmp_path
):
    loss, *grads = compare_step(
        tiny_checkpoint_factory(arch),
        tmp_path,
        "cuda",
        "bfloat16",
        compile=compile,
        checkpointing=checkpointing,
    )
    assert loss["fast"] == pytest.approx(loss["stock"], rel=LOSS_REL)
    assert len(grads) > 0
    for row in grads:
        assert row["norm_rel"] <= GRAD_NORM_REL, row
        assert row["cosine"] >= GRAD_COSINE, row


def test_a_short_run_on_the_default_engine(db, settings, tiny_checkpoint_factory, tmp_path):
    from mondrian.training import registry
    from mondrian.training.config import TrainConfig
    from mondrian.training.dataset import build_dataset
    from mondrian.training.train import train
    from training.training_helpers import add_profile, add_short_advisor

    advisor_id = add_short_advisor(db)
    for i in range(3):
        add_profile(db, settings, i, advisor_id=advisor_id)
    dataset = tmp_path / "dataset"
    build_dataset(db, settings, advisor_id, dataset, val_fraction=0.34, augment=1)
    cfg = TrainConfig(
        model=str(tiny_checkpoint_factory()), rank=8, alpha=16, lr=4e-3, epochs=4,
        scheduler="constant", warmup_ratio=0, max_pixels=PIXELS, device="cuda",
    )  # fmt: skip
    result = train(
        cfg, advisor_id=advisor_id, dataset_dir=dataset, settings=settings, progress=False
    )
    meta = registry.verify_adapter_dir(result.adapter.path)
    assert meta["training"]["engine"] == "fast" and meta["hyperparameters"]["dtype"] == "auto"
    assert meta["training"]["device"].startswith("cuda")
    losses = result.state.step_losses
    assert losses[-1] < losses[0], losses
