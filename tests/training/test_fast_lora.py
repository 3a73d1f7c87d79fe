"""The fast training engine's LoRA arithmetic (training/fast_lora.py, engine/lm.py's
`lora_linear` with the parts' own B): the product without a block-diagonal B equals the
block-diagonal one, values and gradients; and on a bf16 base the working copy is bf16
while the gradients land, in float32, on PEFT's float32 parameters."""

from __future__ import annotations

import pytest

from lora_helpers import randomise_lora


@pytest.mark.parametrize("outs", [(48, 8, 8), (32, 32), (24,)])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_the_parts_product_is_the_block_diagonal_one(outs, dropout):
    """q|k|v-like parts of different sizes, gate|up-like equal ones, and one part (o,
    down): `lora_linear` with B as a tuple of parts equals it with their block_diag, in
    the output and in every input's gradient (dropout's mask drawn alike in both)."""
    import torch

    from mondrian.backends.transformers.engine.lm import lora_linear

    torch.manual_seed(0)
    rank, fan_in, n, t = 4, 16, 2, 5
    x = torch.randn(n, t, fan_in, dtype=torch.float64, requires_grad=True)
    w = torch.randn(sum(outs), fan_in, dtype=torch.float64)
    a = torch.randn(len(outs) * rank, fan_in, dtype=torch.float64, requires_grad=True)
    b_parts = [torch.randn(o, rank, dtype=torch.float64, requires_grad=True) for o in outs]
    rowscale = torch.tensor([[2.0], [0.5]])

    results = []
    for form in ("block_diag", "parts"):
        for tensor in (x, a, *b_parts):
            tensor.grad = None
        b = torch.block_diag(*b_parts) if form == "block_diag" else tuple(b_parts)
        torch.manual_seed(1)
        y = lora_linear(x, w, None, a, b, rowscale, sum(outs), dropout)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        results.append((y.detach(), [t.grad.clone() for t in (x, a, *b_parts)]))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0)
    for old, new in zip(g0, g1, strict=True):
        torch.testing.assert_close(new, old)


@pytest.mark.model
def test_a_bf16_base_trains_float32_masters_through_a_bf16_copy(tiny_checkpoint_factory):
    """PEFT keeps a bf16 model's LoRA in float32; the engine's working copy is bf16 (the
    products' dtype), and backward brings float32 gradients to every PEFT parameter."""
    import torch

    from mondrian.training.config import TrainConfig
    from mondrian.training.fast_engine import FastEngine
    from mondrian.training.setup import add_lora, load_base
    from mondrian.training.train import answer_loss

    cfg = TrainConfig(model=str(tiny_checkpoint_factory()), rank=4, alpha=8, dtype="bfloat16")
    _, model = load_base(cfg, torch.device("cpu"))
    model = add_lora(model, cfg)
    randomise_lora(model, 0)
    engine = FastEngine(model, dropout=0.0).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    working = engine.lora.working()
    assert {t.dtype for t in working.chunks} == {torch.bfloat16}
    assert sum(t.numel() for t in working.chunks) == sum(p.numel() for p in trainable)

    ids = torch.randint(0, 100, (1, 24))
    labels = ids.clone()
    labels[:, :12] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    answer_loss(engine, batch).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)
    assert all(bool(p.grad.isfinite().all()) for p in trainable)
    assert any(bool(p.grad.abs().sum() > 0) for p in trainable)


@pytest.mark.model
def test_each_halfs_chunk_unpacks_into_the_peft_tensors(tiny_checkpoint_factory):
    """The compiled halves' form (`packed_args`: one chunk per layer and half) cuts into
    exactly the PEFT parameters, in the order `lora_linear` takes them, the chunks cover
    the whole working copy, and the frozen arguments are `layer_args`' own."""
    import torch

    from mondrian.backends.transformers.engine.lm import GROUPS
    from mondrian.backends.transformers.engine.lora_bank import peft_parts
    from mondrian.training.config import TrainConfig
    from mondrian.training.fast_engine import ADAPTER, FastEngine
    from mondrian.training.setup import add_lora, load_base

    cfg = TrainConfig(model=str(tiny_checkpoint_factory()), rank=4, alpha=8, dtype="float32")
    _, model = load_base(cfg, torch.device("cpu"))
    model = add_lora(model, cfg)
    randomise_lora(model, 2)
    engine = FastEngine(model, dropout=0.0)
    lm, working = engine.lm, engine.lora.working()
    packing = working.packing
    assert len(working.chunks) == 2 * len(lm.layers)
    assert [c.numel() for c in working.chunks[:2]] == list(packing.sizes)
    for i, layer in enumerate(lm.layers):
        pre, post = working.packed_args(i)
        frozen_pre, frozen_post = lm.layer_args(i, None)
        assert pre[:-1] == frozen_pre[:-2] and post[:-1] == frozen_post[:-6]
        unpacked = (*packing.unpack_pre(pre[-1]), *packing.unpack_post(post[-1]))
        for g, group in enumerate(GROUPS):
            a_parts, b_parts, _ = peft_parts(layer, group, ADAPTER)
            assert torch.equal(unpacked[2 * g], torch.cat(a_parts))
            assert all(torch.equal(w, p) for w, p in zip(unpacked[2 * g + 1], b_parts, strict=True))
        _, _, eager = working.layer_tensors(i)  # validation's form: the same views
        assert all(
            torch.equal(x, y) if isinstance(x, torch.Tensor) else all(map(torch.equal, x, y))
            for x, y in zip(eager, unpacked, strict=True)
        )


@pytest.mark.model
def test_an_adapter_with_per_layer_ranks_is_refused(tiny_checkpoint_factory):
    """One `Packing` serves every layer, so the fast engine refuses ranks that differ by
    layer (mondrian's own adapters have one rank) with a message, not a shape error."""
    import torch
    from peft import LoraConfig, get_peft_model

    from mondrian.training.config import TrainConfig
    from mondrian.training.fast_engine import FastEngine
    from mondrian.training.setup import load_base

    cfg = TrainConfig(model=str(tiny_checkpoint_factory()), dtype="float32")
    _, model = load_base(cfg, torch.device("cpu"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=targets,
        rank_pattern={"layers.0.self_attn.q_proj": 8},
        alpha_pattern={"layers.0.self_attn.q_proj": 16},
    )
    with pytest.raises(ValueError, match="per-layer ranks"):
        FastEngine(get_peft_model(model, lora), dropout=0.0)
