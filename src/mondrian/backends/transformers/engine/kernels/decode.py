"""Which Triton kernels a decode step uses, each checked first against its torch reference
on the device and dtype it will run on (`check`): a kernel that fails to build or differs
is left out, with a warning, and the step runs the torch ops in its place.

`DecodeKernels` is what step.py calls: the norm + q/k/v projection (merged or base
weights only: a mixed batch's stacked LoRA stays on torch), the rotary + K/V write, the
split-KV attention, and the o and down products with their residual adds (merged or base
weights only, as the norm's), each usable alone; and `tuned_gemv`, not a kernel of ours:
inductor's own tuned reductions for the one-row graph's products (tuned_gemv.py). Which
ones are wanted is the `fast_kernels` setting (config.py, MONDRIAN_FAST_KERNELS): `auto`
is AUTO below, the set measured fastest; bench/kernel_ablation.py times each set on the
device."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from mondrian.config import FAST_KERNEL_NAMES, fast_kernels_choice

log = logging.getLogger(__name__)

NAMES = FAST_KERNEL_NAMES
# The `auto` set, from bench/kernel_ablation.py on the H200 (bench/results/
# 2026-12-02-h200-issue21/kernels_qwen2_5_vl_3b.md, forward ms by CUDA-graph replay at bucket
# 2048): torch's ops alone 3.16 (1 row merged) / 4.26 (32 rows, no adapters) / 5.19 (32
# mixed); split-KV attention alone 3.19 / 3.98 / 5.30, the lowest sum of the three relative
# to torch's ops (the rule chosen before the run); norm_linear (4.56 at 1 row), rope_kv
# (3.77) and residual_linear (8.75) are slower than the torch ops and cuBLAS they replace.
# A second machine (bench/results/2026-12-02-h200-issue21b): torch's ops 3.145 / 4.370 /
# 5.568, split-KV 3.233 / 4.208 / 5.413 (the rule's choice again), tuned_gemv 4.391 at 1 row.
AUTO: frozenset[str] = frozenset({"decode_attention"})


def chosen(choice: str | bool) -> frozenset[str]:
    """The kernels a `fast_kernels` value asks for (config.fast_kernels_choice's forms:
    auto, all, none or a comma list of names; a bool as all or none)."""
    choice = str(fast_kernels_choice(choice))
    if choice == "auto":
        return AUTO
    if choice == "all":
        return frozenset(NAMES)
    if choice == "none":
        return frozenset()
    return frozenset(choice.split(","))


# Largest difference from the reference allowed, relative to the reference's own scale:
# float32 differs only by the order of its sums; bfloat16 by a rounding or two.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _scaled_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1))


@dataclass(frozen=True)
class Dims:
    """The model's sizes the kernels see: the checks run on these, so that a size a
    kernel cannot take (say, a head size not a power of two) fails the check, not a step.
    The defaults are small and cross the kernels' block edges."""

    hidden: int = 80
    heads: int = 6
    kv_heads: int = 2
    head_dim: int = 32


def _check_norm_linear(device: torch.device, dtype: torch.dtype, dims: Dims) -> float:
    from mondrian.backends.transformers.engine.kernels import norm_linear as m

    gen = torch.Generator().manual_seed(0)
    fan_in = dims.hidden
    fan_out = (dims.heads + 2 * dims.kv_heads) * dims.head_dim
    ln = torch.randn(fan_in, generator=gen).to(device, dtype)
    w = (torch.randn(fan_out, fan_in, generator=gen) / fan_in**0.5).to(device, dtype)
    bias = torch.randn(fan_out, generator=gen).to(device, dtype)
    errors = []
    # A tile of 16 rows and one of 32 (row_block), at every output block `blocks` may
    # choose (the grid depends on the batch's rows).
    for rows in (3, 20):
        x = (torch.randn(rows, fan_in, generator=gen) * 3).to(device, dtype)
        errors += [
            _scaled_error(m.norm_linear(x, ln, w, b, 1e-6, block), m.reference(x, ln, w, b, 1e-6))
            for b in (bias, None)
            for block in (m.SMALLEST_O, m.BLOCK_O)
        ]
    return max(errors)


def _check_rope_kv(device: torch.device, dtype: torch.dtype, dims: Dims) -> float:
    from mondrian.backends.transformers.engine.kernels import rope_kv as m

    gen = torch.Generator().manual_seed(1)
    rows, heads, kv_heads, dim, length = 3, dims.heads, dims.kv_heads, dims.head_dim, 40
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=gen).to(device, dtype)
    q, k, v = qkv.split((heads * dim, kv_heads * dim, kv_heads * dim), dim=-1)
    q, k, v = (t.view(rows, -1, dim) for t in (q, k, v))  # strided views, as in the step
    angles = torch.randn(rows, dim // 2, generator=gen) * 3
    cos = torch.cat([angles.cos()] * 2, dim=-1).to(device, dtype)
    sin = torch.cat([angles.sin()] * 2, dim=-1).to(device, dtype)
    pos = torch.tensor([0, 17, length - 1], device=device)
    caches = [torch.randn(rows, kv_heads, length, dim, generator=gen).to(device, dtype)]
    caches.append(torch.randn(rows, kv_heads, length, dim, generator=gen).to(device, dtype))
    mine = [c.clone() for c in caches]
    q_ref = m.reference(q, k, v, cos, sin, pos, *caches)
    q_got = m.rope_kv(q, k, v, cos, sin, pos, *mine)
    # The caches' every position: the rows' own written alike, the others untouched.
    errors = [_scaled_error(a, b) for a, b in zip(mine, caches, strict=True)]
    return max(_scaled_error(q_got, q_ref), *errors)


def _check_decode_attention(device: torch.device, dtype: torch.dtype, dims: Dims) -> float:
    from mondrian.backends.transformers.engine.kernels import decode_attention as m

    gen = torch.Generator().manual_seed(2)
    rows, heads, kv_heads, dim, length = 3, dims.heads, dims.kv_heads, dims.head_dim, 320
    errors = []
    # One split and several, the last part-filled, at every split length `split_for` may
    # choose (it depends on the batch's rows and the bucket).
    for bucket, split in ((64, m.SPLIT), (300, m.SPLIT), (300, m.SMALLEST_SPLIT), (300, 64)):
        q = torch.randn(rows, heads, dim, generator=gen).to(device, dtype)
        k = torch.randn(rows, kv_heads, length, dim, generator=gen).to(device, dtype)
        v = torch.randn(rows, kv_heads, length, dim, generator=gen).to(device, dtype)
        lengths = torch.tensor([1, bucket // 2 + 3, bucket], device=device)
        got = m.decode_attention(q, k, v, lengths, bucket, split)
        errors.append(_scaled_error(got, m.reference(q, k, v, lengths, bucket)))
    return max(errors)


def _check_residual_linear(device: torch.device, dtype: torch.dtype, dims: Dims) -> float:
    from mondrian.backends.transformers.engine.kernels import residual_linear as m

    gen = torch.Generator().manual_seed(3)
    hidden, inner = dims.hidden, 3 * dims.hidden + 8  # an inner size off the blocks' edges
    errors = []
    for rows in (3, 20):  # a tile of 16 rows, one of 32
        residual = torch.randn(rows, hidden, generator=gen).to(device, dtype)
        for gated, fan_in in ((False, dims.heads * dims.head_dim), (True, inner)):
            width = 2 * fan_in if gated else fan_in
            x = (torch.randn(rows, width, generator=gen) * 2).to(device, dtype)
            w = (torch.randn(hidden, fan_in, generator=gen) / fan_in**0.5).to(device, dtype)
            ref = m.reference(x, w, residual, gated=gated)
            errors += [
                _scaled_error(m.residual_linear(x, w, residual, gated=gated, block_o=b), ref)
                for b in (16, 64)
            ]
    return max(errors)


def _check_tuned_gemv(device: torch.device, dtype: torch.dtype, dims: Dims) -> float:
    from mondrian.backends.transformers.engine.kernels import tuned_gemv as m

    return m.check(device, dtype, dims.hidden)


CHECKS: dict[str, Callable[[torch.device, torch.dtype, Dims], float]] = {
    "norm_linear": _check_norm_linear,
    "rope_kv": _check_rope_kv,
    "decode_attention": _check_decode_attention,
    "residual_linear": _check_residual_linear,
    "tuned_gemv": _check_tuned_gemv,
}


def check(
    device: torch.device,
    dtype: torch.dtype,
    dims: Dims | None = None,
    names: Collection[str] | None = None,
) -> dict[str, float | str]:
    """Each kernel's (of `names`; None: all) scaled difference from its reference at the
    model's sizes `dims`, or why it could not run."""
    results: dict[str, float | str] = {}
    for name, run in CHECKS.items():
        if names is not None and name not in names:
            continue
        try:
            results[name] = run(device, dtype, dims or Dims())
        except Exception as exc:  # a kernel that cannot build here is left out, not fatal
            results[name] = f"{type(exc).__name__}: {exc}"
    return results


def passing(
    device: torch.device,
    dtype: torch.dtype,
    dims: Dims | None = None,
    names: Collection[str] | None = None,
) -> frozenset[str]:
    """The kernels (of `names`; None: all) whose check passed on `device` in `dtype` at
    `dims`; each other one is logged."""
    limit = TOLERANCE.get(dtype, 4e-2)
    good = set()
    for name, result in check(device, dtype, dims, names).items():
        if isinstance(result, float) and result <= limit:
            good.add(name)
        else:
            log.warning("Triton kernel %s left out (torch ops instead): %s", name, result)
    return frozenset(good)


@dataclass(frozen=True)
class DecodeKernels:
    """The kernels one decode step uses (the names that passed `check`)."""

    names: frozenset[str]

    @classmethod
    def of(cls, names: Iterable[str]) -> DecodeKernels:
        """The kernels named (unchecked: `passing` is the check); an unknown name is a
        ValueError listing the valid ones."""
        wanted = frozenset(names)
        unknown = sorted(wanted - set(NAMES))
        if unknown:
            raise ValueError(f"unknown decode kernel {unknown}: valid are {', '.join(NAMES)}")
        return cls(wanted)

    def projection(self) -> Callable[..., torch.Tensor] | None:
        if "norm_linear" not in self.names:
            return None
        from mondrian.backends.transformers.engine.kernels.norm_linear import norm_linear

        return norm_linear

    def rope_kv(self) -> Callable[..., torch.Tensor] | None:
        if "rope_kv" not in self.names:
            return None
        from mondrian.backends.transformers.engine.kernels.rope_kv import rope_kv

        return rope_kv

    def attention(self) -> Callable[..., torch.Tensor] | None:
        if "decode_attention" not in self.names:
            return None
        from mondrian.backends.transformers.engine.kernels.decode_attention import (
            decode_attention,
        )

        return decode_attention

    def residual(self) -> Callable[..., torch.Tensor] | None:
        if "residual_linear" not in self.names:
            return None
        from mondrian.backends.transformers.engine.kernels.residual_linear import (
            residual_linear,
        )

        return residual_linear

    def compile_options(self) -> dict[str, Any]:
        """Inductor's options for the compiled decode halves: tuned_gemv.py's with it (the
        one-row products as tuned reductions), none without."""
        if "tuned_gemv" not in self.names:
            return {}
        from mondrian.backends.transformers.engine.kernels.tuned_gemv import OPTIONS

        return dict(OPTIONS)
