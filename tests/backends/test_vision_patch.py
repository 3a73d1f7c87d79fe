"""The vision tower's patched forwards (backends/transformers/engine/vision.py) on the CPU.

Their kernel, torch's varlen flash attention, runs on CUDA only, so here a reference
stands in for it: one SDPA call per window over the same cumulative lengths. What is left
to check is the patching itself (every window attended over, the rotary tables, the
compiled block halves' arithmetic, unpatching), against the stock tower."""

from __future__ import annotations

import itertools

import pytest

from generation_helpers import random_photo

CALLS: list[int] = []  # the windows of each call the stand-in answered


def _reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, **kwargs):
    """varlen_attn's result for windowed (not causal) attention: q, k, v [T, heads, D]."""
    import torch
    import torch.nn.functional as F

    CALLS.append(len(cu_q) - 1)
    assert not kwargs, "the vision forwards ask for nothing but the scale"
    assert max_q == max_k == max(b - a for a, b in itertools.pairwise(cu_q.tolist()))
    parts = [
        F.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), scale=scale
        ).transpose(0, 1)
        for a, b in itertools.pairwise(cu_q.tolist())
    ]
    return torch.cat(parts)


@pytest.mark.parametrize("compiled_blocks", [False, True], ids=["attention", "blocks"])
def test_patched_vision_features_equal_the_stock_ones(
    compiled_blocks, tiny_checkpoint_factory, monkeypatch
):
    import torch
    import torch.nn.attention.varlen as varlen

    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine import vision

    backend = TransformersBackend(str(tiny_checkpoint_factory("qwen2_5_vl")), device="cpu")
    model = backend.base
    pixels = backend.processor.image_processor(
        images=[random_photo(0), random_photo(1)], return_tensors="pt"
    )

    def features():
        with torch.inference_mode():
            out = model.model.get_image_features(
                pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"]
            )
        return torch.cat(list(out.pooler_output))

    stock = features()
    monkeypatch.setattr(varlen, "varlen_attn", _reference_varlen)
    # Eager halves: the arithmetic of the compiled ones without a compiler on the CPU.
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(vision, "_COMPILED", {})
    assert vision.patch_vision_attention(model) == len(model.model.visual.blocks)
    if compiled_blocks:
        assert vision.compile_vision_blocks(model) == len(model.model.visual.blocks)
    CALLS.clear()
    patched = features()
    assert len(CALLS) == len(model.model.visual.blocks), "one varlen call per block"
    vision.unpatch_vision_attention(model)
    assert torch.allclose(patched, stock, atol=1e-5, rtol=0)
    assert torch.equal(features(), stock)  # unpatched: the stock forwards again


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_the_patch_embedding_as_a_product_equals_the_convolution(arch, tiny_checkpoint_factory):
    # Qwen3-VL's convolution has a bias, the others' none; each kernel equals its stride.
    import torch

    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine import vision

    backend = TransformersBackend(str(tiny_checkpoint_factory(arch)), device="cpu")
    model = backend.base
    embed = model.model.visual.patch_embed
    pixels = backend.processor.image_processor(images=[random_photo(2)], return_tensors="pt")
    flat = pixels["pixel_values"]
    with torch.inference_mode():
        stock = embed(flat)
        assert vision.linear_patch_embed(model)
        product = embed(flat)
        vision.unpatch_vision_attention(model)
        again = embed(flat)
    assert product.shape == stock.shape
    assert torch.allclose(product, stock, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, stock)  # unpatched: the convolution again
