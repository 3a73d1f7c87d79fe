"""The fast training engine (training/fast_engine.py) against the stock PEFT forward on a
tiny checkpoint in float32: the same loss and the same gradient on every LoRA tensor, on
PEFT's own init and on a LoRA with random B (where A's gradients are not zero); an
adapter trained through it and reloaded by PEFT gives the logits the engine gave."""

from __future__ import annotations

from typing import Any

import pytest
from training_helpers import add_profile, add_short_advisor

from lora_helpers import randomise_lora
from mondrian.training.config import TrainConfig
from mondrian.training.dataset import build_dataset

pytestmark = pytest.mark.model


def _parts(state, settings, checkpoint, tmp_path) -> tuple[Any, Any, dict[str, Any]]:
    """(processor, PEFT model, a two-row padded batch) on the tiny checkpoint."""
    from mondrian.training.collate import Collator, ExampleEncoder
    from mondrian.training.dataset_files import load_split
    from mondrian.training.setup import add_lora, load_base

    advisor_id = add_short_advisor(state)
    for i in range(2):
        add_profile(state, settings, i, advisor_id=advisor_id)
    dataset = tmp_path / "dataset"
    build_dataset(state, settings, advisor_id, dataset, val_fraction=0, augment=2)
    cfg = TrainConfig(
        model=str(checkpoint), rank=4, alpha=8, dropout=0.0, max_pixels=3136, dtype="float32"
    )
    import torch

    processor, model = load_base(cfg, torch.device("cpu"))
    model = add_lora(model, cfg)
    encoder = ExampleEncoder(processor, cfg.max_pixels, cfg.max_seq_len)
    records = load_split(dataset, "train")[:2]
    # Rows of different lengths, so the batch is padded (the engine needs no mask there).
    records[1]["messages"][-1]["content"] = "short"
    batch = Collator(processor.tokenizer.pad_token_id)([encoder.encode(r) for r in records])
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()
    return processor, model, batch


def _loss_and_grads(forward: Any, model: Any, batch: dict[str, Any]) -> tuple[float, dict]:
    from mondrian.training.train import answer_loss

    model.zero_grad(set_to_none=True)
    loss = answer_loss(forward, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_one_step_equals_the_peft_path(arch, state, settings, tiny_checkpoint_factory, tmp_path):
    import torch

    from mondrian.training.fast_engine import FastEngine

    _, model, batch = _parts(state, settings, tiny_checkpoint_factory(arch), tmp_path)
    model.train()
    engine = FastEngine(model, dropout=0.0)
    for randomise_b in (False, True):
        if randomise_b:  # PEFT's init has B = 0, so A's gradients are zero on both paths
            randomise_lora(model, 1)
        stock_loss, stock = _loss_and_grads(model, model, batch)
        fast_loss, fast = _loss_and_grads(engine, model, batch)
        assert fast_loss == pytest.approx(stock_loss, rel=1e-5)
        assert fast.keys() == stock.keys() and len(stock) > 0
        for name, g in stock.items():
            torch.testing.assert_close(fast[name], g, rtol=1e-4, atol=1e-6, msg=name)
        a_grads = [g for n, g in fast.items() if "lora_A" in n]
        assert any(bool(g.abs().sum() > 0) for g in a_grads) == randomise_b


def test_checkpointing_changes_no_gradient_dropout_included(
    state, settings, tiny_checkpoint_factory, tmp_path
):
    """`gradient_checkpointing` on the fast engine: the same loss and gradients, bit for
    bit, with dropout on (its masks are replayed in the recomputation)."""
    import torch

    from mondrian.training.fast_engine import FastEngine

    _, model, batch = _parts(state, settings, tiny_checkpoint_factory(), tmp_path)
    randomise_lora(model, 4)
    results = []
    for checkpointing in (False, True):
        engine = FastEngine(model, dropout=0.3, checkpointing=checkpointing).train()
        torch.manual_seed(5)
        results.append(_loss_and_grads(engine, model, batch))
    (plain_loss, plain), (ckpt_loss, ckpt) = results
    assert ckpt_loss == plain_loss
    assert all(torch.equal(ckpt[n], g) for n, g in plain.items())
    torch.manual_seed(6)  # another dropout mask: another loss (dropout is on)
    assert _loss_and_grads(engine, model, batch)[0] != plain_loss


def test_peft_init_and_targets_are_the_stock_paths(
    state, settings, tiny_checkpoint_factory, tmp_path
):
    """The engine trains the PEFT model's own tensors: A kaiming-uniform (nonzero), B zero,
    on every target of setup.add_lora, with alpha/r as the scale."""
    from mondrian.training.fast_engine import FastEngine

    _, model, _ = _parts(state, settings, tiny_checkpoint_factory(), tmp_path)
    engine = FastEngine(model, dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, p in engine.named_parameters() if p.requires_grad} == {
        f"peft.{n}" for n in trainable
    }
    layers = len(engine.lm.layers)
    assert len(trainable) == layers * 7 * 2  # q k v o gate up down, A and B each
    assert engine.lora.scaling == 8 / 4
    for name, p in model.named_parameters():
        if "lora_B" in name:
            assert bool((p == 0).all()), name
        elif "lora_A" in name:
            assert bool((p != 0).any()), name


def test_a_reloaded_adapter_gives_the_engines_logits(
    state, settings, tiny_checkpoint_factory, tmp_path
):
    """Engine -> PEFT files -> a fresh PEFT model: the stock forward's logits equal the
    engine's (the files are PEFT's own: keys and shapes of the stock path)."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from mondrian.training.fast_engine import FastEngine
    from mondrian.training.setup import load_base

    _, model, batch = _parts(state, settings, tiny_checkpoint_factory(), tmp_path)
    engine = FastEngine(model, dropout=0.0)
    randomise_lora(model, 2, part="lora_")
    engine.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    keep = batch["attention_mask"].bool()
    positions = keep.any(dim=0).nonzero().squeeze(1)
    with torch.no_grad():
        fast_logits = engine(**inputs, logits_to_keep=positions).logits[keep[:, positions]]
    model.save_pretrained(tmp_path / "adapter")

    cfg = TrainConfig(model=str(tiny_checkpoint_factory()), dtype="float32")
    _, fresh = load_base(cfg, torch.device("cpu"))
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        stock_logits = reloaded(**inputs).logits[keep]
    torch.testing.assert_close(fast_logits, stock_logits, rtol=1e-4, atol=1e-4)
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any(".self_attn.q_proj.lora_A.weight" in k for k in saved)
    assert any(".mlp.gate_proj.lora_B.weight" in k for k in saved)


def test_the_training_layout_is_the_serving_banks(
    state, settings, tiny_checkpoint_factory, tmp_path
):
    """What the engine trains through (`peft_parts`, stacked as `lora_linear` multiplies
    them: the A's one block, the B's block-diagonal) is, tensor for tensor, what the serving
    LoraBank loads from the same PEFT modules: one layout of fused q|k|v, gate|up; and the
    working copy's A block is that stack."""
    import torch

    from mondrian.backends.transformers.engine.lm import GROUPS
    from mondrian.backends.transformers.engine.lora_bank import LoraBank, peft_parts
    from mondrian.training.fast_engine import ADAPTER, FastEngine

    _, model, _ = _parts(state, settings, tiny_checkpoint_factory(), tmp_path)
    randomise_lora(model, 3)
    engine = FastEngine(model, dropout=0.0)
    lm, working = engine.lm, engine.lora.working()
    bank = LoraBank(lm, capacity=2, rank=4, fused=False)
    slot = bank.load(ADAPTER)
    assert float(bank.scale[slot]) == 8 / 4
    for i, layer in enumerate(lm.layers):
        _, _, tensors = working.layer_tensors(i)
        for g, group in enumerate(GROUPS):
            a_parts, b_parts, scaling = peft_parts(layer, group, ADAPTER)
            assert scaling == 8 / 4
            a, b = torch.cat(a_parts), torch.block_diag(*b_parts)
            assert torch.equal(bank.a[i][group][slot], a)
            assert torch.equal(bank.b[i][group][:, slot], b)
            work_a, work_b = tensors[2 * g], tensors[2 * g + 1]
            assert torch.equal(work_a, a)
            assert len(work_b) == len(b_parts)
            assert all(torch.equal(w, p) for w, p in zip(work_b, b_parts, strict=True))
