"""One-row products as Triton reductions that inductor writes and tunes, fused with their
neighbours: the `tuned_gemv` entry of the decode kernels (decode.py).

At one row a decode step's products are matrix-vector products. Through cuBLAS each is
a kernel of its own, with the norm before it and the SiLU, residual add or split-K
reduction after it each one more: about seventeen kernels a layer at batch 1 on the H200
(bench/results/2026-12-02-h200-issue21, the rows-1 profile: 606 kernels a step). With
inductor's `coordinate_descent_tuning` on, torch._inductor's decomposition of `mm`
rewrites a product whose rows are statically one as a multiply and a sum: a reduction
inductor generates itself, fuses with the pointwise work around it (the SiLU * up into
the down product's loads, the residual add into its store) and tunes block sizes for
(gpt-fast's recipe for batch-1 decoding). Products with a bias go through `addmm`, which
that decomposition leaves to cuBLAS; in step.py's graphs only the one-row graph has a
static row count, so batches of more rows keep cuBLAS.

`OPTIONS` are the compile options step.py gives the decode halves when the entry is
chosen. `check` compiles a norm, a product, SiLU * up, a product and a residual add at
one row with them and compares it with the same function eager: on CUDA that is the
decomposed path, elsewhere inductor keeps its own products (the check then says so)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.transformers.engine.lm import rms_norm

OPTIONS: dict[str, Any] = {"coordinate_descent_tuning": True}


def probe(
    x: torch.Tensor, ln: torch.Tensor, gu_w: torch.Tensor, down_w: torch.Tensor, eps: float
) -> torch.Tensor:
    """lm.py's MLP half at one row: x [1, 1, H] -> x + down(SiLU(gate) * up)."""
    gate, up = F.linear(rms_norm(x, ln, eps), gu_w).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, down_w)


def check(device: torch.device, dtype: torch.dtype, hidden: int) -> float:
    """The compiled probe's scaled difference from the eager one, at one row and the
    model's hidden size (inner size 3x hidden, off the blocks' edges by 8). Raises on
    the CPU: inductor decomposes one-row products on GPUs only."""
    if device.type != "cuda":
        raise RuntimeError("tuned_gemv needs a CUDA device (inductor's one-row decomposition)")
    gen = torch.Generator().manual_seed(4)
    inner = 3 * hidden + 8
    x = torch.randn(1, 1, hidden, generator=gen).to(device, dtype)
    ln = torch.randn(hidden, generator=gen).to(device, dtype)
    gu_w = (torch.randn(2 * inner, hidden, generator=gen) / hidden**0.5).to(device, dtype)
    down_w = (torch.randn(hidden, inner, generator=gen) / inner**0.5).to(device, dtype)
    compiled = torch.compile(probe, fullgraph=True, dynamic=False, options=OPTIONS)
    got = compiled(x, ln, gu_w, down_w, 1e-6)
    ref = probe(x, ln, gu_w, down_w, 1e-6)
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1))
