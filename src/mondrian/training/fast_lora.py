"""The PEFT model's adapter as the fast training engine multiplies by it (fast_engine.py).

PEFT's parameters stay the one home of the LoRA (float32 masters under a bf16 base:
PEFT's `autocast_adapter_dtype`, which the stock path trains too). Each forward takes one
working copy of all of them in the model's dtype:

    flat = cat(every lora_A / lora_B, flattened).to(model dtype)     # 2 ops, not ~1,000
    per layer and half (pre: q|k|v; post: o, gate|up, down): one chunk of flat
    inside a half: per group A = [parts * r, in], each part's B [out_p, r_p], views of it

so a step pays one concatenation and one cast forward (their backward: one cast of the
flat gradient, whose slices become each parameter's `.grad`), where gathering layer by
layer cost a cat, a block_diag and two casts per group and as many again backward.

Why a chunk per half: the compiled halves (fast_halves.py) take their LoRA as that one
chunk and cut it into A and B views inside the graph (`Packing`), so autograd sees two
LoRA inputs a layer instead of eleven views, each of them a node forward and backward and
an input the compiled call guards and hands a gradient (on the H200 the compiled step is
bound by the CPU's work around the kernels: bench/results/2026-12-02-h200-issue21c).
Measured there since: 177.4 against 179.8 ms a step. The view nodes went; the graphs
allocate a little more (bench/results/2026-12-02-h200-issue21d).
Eager passes (validation, the eager fallback) take the same views through
`layer_tensors`. The products take the parts' B as they are (`lora_linear` with `b` a
tuple, engine/lm.py): no block-diagonal B, no zeros. Gradients still land on PEFT's
parameters, so the optimizer, checkpoints, `--resume`, DDP and the published files are
the stock path's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mondrian.backends.transformers.engine.lm import GROUPS, FastLM
from mondrian.backends.transformers.engine.lora_bank import peft_parts

ADAPTER = "default"  # the name PEFT gives the one adapter of get_peft_model

# The groups each half of a layer multiplies (FastLM.pre: q|k|v; FastLM.post: the rest),
# in GROUPS' order; each takes an (A, B parts) pair of arguments.
PRE_GROUPS = ("qkv",)
POST_GROUPS = tuple(g for g in GROUPS if g not in PRE_GROUPS)

Shape = tuple[int, ...]
GroupShape = tuple[Shape, tuple[Shape, ...]]  # the stacked A's, each part's B


@dataclass(frozen=True)
class Packing:
    """Where each group's A and B parts sit in a half's flat chunk (the same in every
    layer: one rank and scaling for the whole adapter)."""

    pre: tuple[GroupShape, ...]
    post: tuple[GroupShape, ...]

    @property
    def sizes(self) -> tuple[int, int]:
        """The pre and post chunks' lengths."""
        return _size(self.pre), _size(self.post)

    def unpack_pre(self, flat: torch.Tensor) -> tuple[Any, ...]:
        """`pre`'s LoRA arguments (A, B parts) from its chunk."""
        return _unpack(flat, self.pre)

    def unpack_post(self, flat: torch.Tensor) -> tuple[Any, ...]:
        """`post`'s LoRA arguments (o's A, B parts, gate|up's, down's) from its chunk."""
        return _unpack(flat, self.post)


def _size(groups: tuple[GroupShape, ...]) -> int:
    return sum(math.prod(a) + sum(math.prod(b) for b in bs) for a, bs in groups)


def _unpack(flat: torch.Tensor, groups: tuple[GroupShape, ...]) -> tuple[Any, ...]:
    shapes = [shape for a, bs in groups for shape in (a, *bs)]
    chunks = flat.split([math.prod(shape) for shape in shapes])
    views = [chunk.view(shapes[j]) for j, chunk in enumerate(chunks)]
    out: list[Any] = []
    j = 0
    for _, bs in groups:  # (A, (B parts)) per group, as lora_linear takes them
        out += [views[j], tuple(views[j + 1 : j + 1 + len(bs)])]
        j += 1 + len(bs)
    return tuple(out)


class WorkingLora:
    """One forward's model-dtype copy of the adapter: a chunk per layer and half
    (`packed_args`, the compiled halves' form) and its views as `FastLM.prefill` takes a
    LoRA (`layer_tensors`, engine/lm.py's `LayerLora`)."""

    def __init__(self, lm: FastLM, chunks: list[torch.Tensor], packing: Packing):
        self.lm = lm
        self.chunks = chunks  # layer i's pre chunk at 2 * i, its post chunk at 2 * i + 1
        self.packing = packing

    def layer_tensors(
        self, i: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, tuple[object, ...]]:
        """The frozen working weights, the q/k/v bias, and (A, B parts) per group."""
        layer = self.lm.layers[i]
        weights = {"qkv": layer.qkv_w, "o": layer.o_w, "gu": layer.gu_w, "down": layer.down_w}
        pre = self.packing.unpack_pre(self.chunks[2 * i])
        post = self.packing.unpack_post(self.chunks[2 * i + 1])
        return weights, layer.qkv_b, (*pre, *post)

    def packed_args(self, i: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Layer i's `pre` and `post` arguments with each half's LoRA as its one chunk in
        place of the (A, B parts) pairs (fast_halves.py's halves unpack it)."""
        pre, post = self.lm.layer_args(i, None)  # the frozen tensors; the LoRA's slots None
        pre = (*pre[: -2 * len(PRE_GROUPS)], self.chunks[2 * i])
        post = (*post[: -2 * len(POST_GROUPS)], self.chunks[2 * i + 1])
        return pre, post

    def detached(self) -> WorkingLora:
        """The same values as fresh leaves that take gradients: for a trial pass whose
        gradients must not reach PEFT's parameters (fast_halves.py's check)."""
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in self.chunks]
        return WorkingLora(self.lm, leaves, self.packing)


class PeftLora:
    """The PEFT model's adapter `name` over a FastLM: its parameters in one fixed order
    (layer by layer, each group's A parts then its B parts), their `Packing`, and
    `working()`, the differentiable model-dtype copy of one forward."""

    def __init__(self, lm: FastLM, name: str = ADAPTER) -> None:
        self.lm = lm
        self.params: list[torch.Tensor] = []
        scales, packings = set(), set()
        for layer in lm.layers:
            shapes: dict[str, GroupShape] = {}
            for group in GROUPS:
                a_parts, b_parts, scale = peft_parts(layer, group, name)
                scales.add(scale)
                if len({p.shape[1] for p in a_parts}) != 1:
                    raise ValueError("the parts of a LoRA group differ in input size")
                self.params += [*a_parts, *b_parts]
                a = (sum(p.shape[0] for p in a_parts), a_parts[0].shape[1])
                shapes[group] = (a, tuple(tuple(b.shape) for b in b_parts))
            packings.add(
                Packing(
                    pre=tuple(shapes[g] for g in PRE_GROUPS),
                    post=tuple(shapes[g] for g in POST_GROUPS),
                )
            )
        if len(scales) != 1:
            raise ValueError(f"adapter {name} has per-module scalings")
        if len(packings) != 1:
            raise ValueError(f"adapter {name} has per-layer ranks")
        self.scaling = scales.pop()
        self.packing = packings.pop()

    def working(self) -> WorkingLora:
        """This forward's copy in the model's dtype (a no-op cast when the LoRA already is
        in it, as in float32), differentiable back to PEFT's parameters."""
        flat = torch.cat([p.reshape(-1) for p in self.params]).to(self.lm.dtype)
        chunks = list(flat.split(self.packing.sizes * len(self.lm.layers)))
        return WorkingLora(self.lm, chunks, self.packing)
