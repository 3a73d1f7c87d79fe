"""The PEFT model's adapter as the fast training engine multiplies by it (fast_engine.py).

PEFT's parameters stay the one home of the LoRA (float32 masters under a bf16 base:
PEFT's `autocast_adapter_dtype`, which the stock path trains too). Each forward takes one
working copy of all of them in the model's dtype:

    flat = cat(every lora_A / lora_B, flattened).to(model dtype)     # 2 ops, not ~1,000
    per layer and group: A = [parts * r, in], a view of flat (the parts' A are adjacent),
                         each part's B [out_p, r_p], a view of flat

so a step pays one concatenation and one cast forward (their backward: one cast of the
flat gradient, whose slices become each parameter's `.grad`), where gathering layer by
layer cost a cat, a block_diag and two casts per group and as many again backward. The
products take the parts' B as they are (`lora_linear` with `b` a tuple, engine/lm.py):
no block-diagonal B, no zeros. Gradients still land on PEFT's parameters, so the
optimizer, checkpoints, `--resume`, DDP and the published files are the stock path's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mondrian.backends.transformers.engine.lm import GROUPS, FastLM
from mondrian.backends.transformers.engine.lora_bank import peft_parts

ADAPTER = "default"  # the name PEFT gives the one adapter of get_peft_model


@dataclass(frozen=True)
class _Group:
    """Where one group's tensors sit among the working copy's chunks."""

    a: int  # chunk index of the stacked A [parts * r, in]
    b: tuple[int, ...]  # chunk index of each part's B [out_p, r_p]


class WorkingLora:
    """One forward's model-dtype views of the adapter, as `FastLM.prefill` takes a LoRA
    (`layer_tensors`, engine/lm.py's `LayerLora`)."""

    def __init__(self, lm: FastLM, tensors: list[torch.Tensor], layout: list[dict[str, _Group]]):
        self.lm = lm
        self.tensors = tensors
        self.layout = layout

    def layer_tensors(
        self, i: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, tuple[object, ...]]:
        """The frozen working weights, the q/k/v bias, and (A, B parts) per group."""
        layer = self.lm.layers[i]
        weights = {"qkv": layer.qkv_w, "o": layer.o_w, "gu": layer.gu_w, "down": layer.down_w}
        lora: list[object] = []
        for group in GROUPS:
            where = self.layout[i][group]
            lora += [self.tensors[where.a], tuple(self.tensors[j] for j in where.b)]
        return weights, layer.qkv_b, tuple(lora)

    def detached(self) -> WorkingLora:
        """The same values as fresh leaves that take gradients: for a trial pass whose
        gradients must not reach PEFT's parameters (fast_halves.py's check)."""
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in self.tensors]
        return WorkingLora(self.lm, leaves, self.layout)


class PeftLora:
    """The PEFT model's adapter `name` over a FastLM: its parameters in one fixed order,
    and `working()`, the differentiable model-dtype copy of one forward."""

    def __init__(self, lm: FastLM, name: str = ADAPTER) -> None:
        self.lm = lm
        self.params: list[torch.Tensor] = []
        self.shapes: list[tuple[int, ...]] = []  # of each chunk of the working copy
        self.layout: list[dict[str, _Group]] = []
        scales = set()
        for layer in lm.layers:
            groups = {}
            for group in GROUPS:
                a_parts, b_parts, scale = peft_parts(layer, group, name)
                scales.add(scale)
                groups[group] = _Group(
                    a=self._chunk(a_parts), b=tuple(self._chunk([b]) for b in b_parts)
                )
            self.layout.append(groups)
        if len(scales) != 1:
            raise ValueError(f"adapter {name} has per-module scalings")
        self.scaling = scales.pop()
        self.sizes = [math.prod(shape) for shape in self.shapes]

    def _chunk(self, params: list[torch.Tensor]) -> int:
        """Adds `params` (stacked along rows) as the next chunk; its index."""
        if len({p.shape[1] for p in params}) != 1:
            raise ValueError("the parts of a LoRA group differ in input size")
        self.params += params
        self.shapes.append((sum(p.shape[0] for p in params), params[0].shape[1]))
        return len(self.shapes) - 1

    def working(self) -> WorkingLora:
        """This forward's copy in the model's dtype (a no-op cast when the LoRA already is
        in it, as in float32), differentiable back to PEFT's parameters."""
        flat = torch.cat([p.reshape(-1) for p in self.params]).to(self.lm.dtype)
        chunks = flat.split(self.sizes)
        tensors = [c.view(shape) for c, shape in zip(chunks, self.shapes, strict=True)]
        return WorkingLora(self.lm, tensors, self.layout)
