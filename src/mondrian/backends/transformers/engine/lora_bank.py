"""Resident LoRA adapters as stacked tensors for the fused LM (lm.py).

Two ways a batch uses them: `merge` folds one adapter into the working weights (a batch on
one adapter then pays no per-token LoRA cost), and `layer_tensors` hands a mixed batch every
slot's A and B, selected per row by `rowscale` inside `lora_linear` (lm.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mondrian.backends.transformers.engine.lm import GROUPS, FastLM, Layer, base_linear


def adapter_rank(lm: FastLM, name: str) -> int:
    """The largest LoRA rank adapter `name` has on any of the LM's targets (0: none)."""
    rank = 0
    for layer in lm.layers:
        for module in (layer.module(t) for targets in GROUPS.values() for t in targets):
            lora_a = getattr(module, "lora_A", None)
            if lora_a is not None and name in lora_a:
                rank = max(rank, lora_a[name].weight.shape[0])
    return rank


class LoraBank:
    """Resident adapters as stacked tensors, one slot each, plus the merged "hot" one.

    Per layer and group: A [S, R, in] and B [out, S, R], R = parts * rank (zero-padded to
    the largest rank), B block-diagonal over the group's parts. Slots are filled from the
    PEFT modules the backend already loaded, so the adapter files are read once.

    `fused` (serving): each group's working weight and every slot's A share one tensor
    [out + S*R, in], the weight on top, so that a mixed batch gets x @ W.T and all the
    x @ A.T from one product (at 32 rows that saves four launches a layer, ~0.5 ms a step
    on the 3B; bench/NOTES.md); the layer's working weight is then the top rows, a view.
    Unfused (the training harness): A is a tensor of its own, a leaf that can take
    gradients."""

    def __init__(self, lm: FastLM, capacity: int, rank: int, *, fused: bool = True) -> None:
        self.lm = lm
        self.capacity = capacity
        self.rank = rank
        self.fused = fused
        self.names: list[str | None] = [None] * capacity
        self.scale = torch.zeros(capacity, dtype=torch.float32)
        self.a: list[dict[str, torch.Tensor]] = []
        self.b: list[dict[str, torch.Tensor]] = []
        self.w: list[dict[str, torch.Tensor]] = []  # fused: [out + S*R, in] per group
        self.qkv_bias: list[torch.Tensor | None] = []  # fused: the q/k/v bias, zeros below
        dev, dtype = lm.device, lm.dtype
        for layer in lm.layers:
            # o and down alias the model's weights until now; merging writes into them, so
            # they become copies (q/k/v and gate/up are copies already). Graphs captured
            # before this point are stale: the caller drops them.
            working = {
                "qkv": layer.qkv_w,
                "o": base_linear(layer.module("o_proj")).weight.detach(),
                "gu": layer.gu_w,
                "down": base_linear(layer.module("down_proj")).weight.detach(),
            }
            a_l, b_l, w_l = {}, {}, {}
            for group, (fan_in, outs) in lm.group_io.items():
                r, out = len(outs) * rank, sum(outs)
                b_l[group] = torch.zeros(out, capacity, r, dtype=dtype, device=dev)
                if fused:
                    w = torch.zeros(out + capacity * r, fan_in, dtype=dtype, device=dev)
                    w[:out].copy_(working[group])
                    w_l[group] = w
                    a_l[group] = w[out:].view(capacity, r, fan_in)
                    working[group] = w[:out]
                else:
                    a_l[group] = torch.zeros(capacity, r, fan_in, dtype=dtype, device=dev)
                    if group in ("o", "down"):
                        working[group] = working[group].clone()
            layer.qkv_w, layer.o_w = working["qkv"], working["o"]
            layer.gu_w, layer.down_w = working["gu"], working["down"]
            bias = layer.qkv_b
            if fused and bias is not None:
                bias = torch.cat([bias, bias.new_zeros(capacity * len(GROUPS["qkv"]) * rank)])
            self.a.append(a_l)
            self.b.append(b_l)
            self.w.append(w_l)
            self.qkv_bias.append(bias)
        self.hot: str | None = None

    def slot_of(self, name: str) -> int:
        return self.names.index(name)

    def load(self, name: str) -> int:
        """Copy adapter `name` from the model's PEFT modules into a free slot."""
        if name in self.names:
            return self.slot_of(name)
        slot = self.names.index(None)
        scale = None
        for i, layer in enumerate(self.lm.layers):
            for group, targets in GROUPS.items():
                _, outs = self.lm.group_io[group]
                a, b = self.a[i][group], self.b[i][group]
                a[slot].zero_()
                b[:, slot].zero_()
                row = 0
                for p, target in enumerate(targets):
                    module = layer.module(target)
                    lora_a = getattr(module, "lora_A", {})
                    if name in lora_a:
                        if name in getattr(module, "lora_variant", {}):
                            raise ValueError(f"adapter {name} uses a LoRA variant (DoRA?)")
                        wa = module.lora_A[name].weight.detach()
                        wb = module.lora_B[name].weight.detach()
                        r = wa.shape[0]
                        if r > self.rank:
                            raise ValueError(f"adapter {name} has rank {r} > bank rank")
                        s = float(module.scaling[name])
                        if scale is None:
                            scale = s
                        elif abs(scale - s) > 1e-9 * max(1.0, abs(s)):
                            raise ValueError(f"adapter {name} has per-module scalings")
                        cols = slice(p * self.rank, p * self.rank + r)
                        a[slot, cols] = wa.to(a.dtype)
                        b[row : row + outs[p], slot, cols] = wb.to(b.dtype)
                    row += outs[p]
        self.names[slot] = name
        self.scale[slot] = scale if scale is not None else 0.0
        return slot

    def unload(self, name: str) -> None:
        if name in self.names:
            slot = self.slot_of(name)
            self.names[slot] = None
            self.scale[slot] = 0.0
            if self.hot == name:
                self.merge(None)

    def layer_tensors(
        self, i: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, tuple[torch.Tensor | None, ...]]:
        """What a mixed batch's layer i multiplies by: the weight per group (fused: with the
        A rows below), the q/k/v bias, and (qkv_a, qkv_b, o_a, o_b, gu_a, gu_b, down_a,
        down_b) as [S*R, in] (None when fused) and [out, S*R]."""
        layer = self.lm.layers[i]
        if self.fused:
            weights = self.w[i]
        else:
            weights = {"qkv": layer.qkv_w, "o": layer.o_w, "gu": layer.gu_w, "down": layer.down_w}
        lora: list[torch.Tensor | None] = []
        for group in GROUPS:
            a, b = self.a[i][group], self.b[i][group]
            lora.append(None if self.fused else a.view(-1, a.shape[-1]))
            lora.append(b.view(b.shape[0], -1))
        return weights, self.qkv_bias[i], tuple(lora)

    def rowscale(self, slots: Sequence[int | None], device: torch.device) -> torch.Tensor:
        """[N, S]: each row's adapter scaling in its slot (a base row is all zeros)."""
        rs = torch.zeros(len(slots), self.capacity, dtype=torch.float32)
        for row, slot in enumerate(slots):
            if slot is not None:
                rs[row, slot] = self.scale[slot]
        return rs.to(device)

    @torch.inference_mode()
    def merge(self, name: str | None) -> None:
        """Make the working weights base + scaling * B @ A of adapter `name` (None: base).

        One pass per weight (read the model's pristine weight, write the working copy), so
        a switch costs about twice the LM's linear weight bytes over memory bandwidth."""
        if name == self.hot:
            return
        slot = None if name is None else self.slot_of(name)
        for i, layer in enumerate(self.lm.layers):
            working = {"qkv": layer.qkv_w, "o": layer.o_w, "gu": layer.gu_w, "down": layer.down_w}
            for group, targets in GROUPS.items():
                row = 0
                for p, target in enumerate(targets):
                    pristine = base_linear(layer.module(target)).weight
                    out = working[group][row : row + pristine.shape[0]]
                    if slot is None:
                        out.copy_(pristine)
                    else:
                        cols = slice(p * self.rank, (p + 1) * self.rank)
                        a = self.a[i][group][slot, cols]
                        b = self.b[i][group][row : row + pristine.shape[0], slot, cols]
                        torch.addmm(pristine, b, a, alpha=float(self.scale[slot]), out=out)
                    row += pristine.shape[0]
        self.hot = name


def peft_parts(
    layer: Layer, group: str, name: str
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Adapter `name`'s LoRA on one group of `layer`: the PEFT modules' own `lora_A` and
    `lora_B` parameters, one of each per part of the group (q|k|v, o, gate|up, down, in the
    group's order), and the scaling. The parameters themselves, not copies: the training
    engine (training/fast_lora.py) multiplies by views of them, so gradients land on PEFT's
    tensors; stacked, the A's are the [parts * r, in] block and block-diagonal, the B's the
    [out, parts * r] block `LoraBank.load` copies into a slot."""
    a_parts, b_parts, scales = [], [], set()
    for target in GROUPS[group]:
        module = layer.module(target)
        if name not in getattr(module, "lora_A", {}):
            raise ValueError(f"adapter {name} has no LoRA on {target}")
        if name in getattr(module, "lora_variant", {}):
            raise ValueError(f"adapter {name} uses a LoRA variant (DoRA?)")
        a_parts.append(module.lora_A[name].weight)
        b_parts.append(module.lora_B[name].weight)
        scales.add(float(module.scaling[name]))
    if len(scales) != 1:
        raise ValueError(f"adapter {name} has per-module scalings")
    return a_parts, b_parts, scales.pop()
