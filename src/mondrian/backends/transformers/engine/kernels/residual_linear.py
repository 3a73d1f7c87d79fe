"""A decode layer's two products that end in the residual: y = residual + act(x) @ W.T.

- the attention output's projection (o_proj): act is the identity;
- the MLP's down projection: x is the gate|up product [N, 2 * intermediate] and act is
  SiLU(gate) * up, computed on the chip from x's two halves, so the activation is never
  written to memory (torch: one elementwise kernel for it, then the product, then cuBLAS's
  split-K reduction and the residual add, four kernels).

At a few rows each is a stream of the weight from memory, as norm_linear.py's product is:
the output block is chosen by the same rule (`blocks`), so the grid covers the device.
Rounding follows lm.py's `post` as torch runs it eagerly: SiLU rounded to the model dtype,
then the product with up rounded, the product's sum in float32 rounded once, the residual
add in float32 rounded once.

Measured on the H200 (bench/results/2026-12-02-h200-issue21): 86 us a call at one row,
against cuBLAS's 4 (o) and 15 (down) us: a fraction of the memory's speed (the down
product's program loops over 86 blocks of 128 inputs, likely bound by each load's latency;
not profiled further). Correct, and kept out of `auto` (kernels/decode.py) until a tiling
that streams the weight beats cuBLAS."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mondrian.backends.transformers.engine.kernels.norm_linear import blocks, row_block

BLOCK_K = 128  # inputs per load


@triton.jit
def _residual_linear_kernel(
    x_ptr,
    w_ptr,
    r_ptr,
    y_ptr,
    rows,
    fan_in,
    fan_out,
    stride_x,
    stride_w,
    stride_r,
    stride_y,
    GATED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_o = tl.program_id(0)
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    row_ok = offs_m < rows
    dtype = x_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_M, BLOCK_O], dtype=tl.float32)
    for k0 in range(0, fan_in, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < fan_in
        ok = row_ok[:, None] & k_ok[None, :]
        at = offs_m[:, None] * stride_x + offs_k[None, :]
        if GATED:  # x holds gate then up: act = SiLU(gate) * up, rounded as torch rounds
            gate = tl.load(x_ptr + at, mask=ok, other=0.0).to(tl.float32)
            up = tl.load(x_ptr + at + fan_in, mask=ok, other=0.0)
            silu = (gate / (1.0 + tl.exp(-gate))).to(dtype)
            a = (silu.to(tl.float32) * up.to(tl.float32)).to(dtype)
        else:
            a = tl.load(x_ptr + at, mask=ok, other=0.0)
        w_ok = (offs_o[None, :] < fan_out) & k_ok[:, None]
        w = tl.load(w_ptr + offs_o[None, :] * stride_w + offs_k[:, None], mask=w_ok, other=0.0)
        acc = tl.dot(a, w, acc, input_precision="ieee")
    ok = row_ok[:, None] & (offs_o[None, :] < fan_out)
    r = tl.load(r_ptr + offs_m[:, None] * stride_r + offs_o[None, :], mask=ok, other=0.0)
    y = r.to(tl.float32) + acc.to(dtype).to(tl.float32)
    tl.store(y_ptr + offs_m[:, None] * stride_y + offs_o[None, :], y.to(dtype), mask=ok)


def residual_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    residual: torch.Tensor,
    *,
    gated: bool = False,
    block_o: int | None = None,
) -> torch.Tensor:
    """x [N, in] (gated: [N, 2 * in], gate then up), w [out, in], residual [N, out] ->
    residual + act(x) @ w.T [N, out] in x's dtype; `block_o`: outputs per program (None:
    norm_linear.py's `blocks`)."""
    x, residual = x.contiguous(), residual.contiguous()
    rows = x.shape[0]
    fan_out, fan_in = w.shape
    if x.shape[1] != (2 * fan_in if gated else fan_in) or residual.shape != (rows, fan_out):
        raise ValueError("residual_linear: shapes do not match")
    y = torch.empty(rows, fan_out, dtype=x.dtype, device=x.device)
    block_o = block_o or blocks(rows, fan_out, x.device)
    block_m = row_block(rows)
    grid = (triton.cdiv(fan_out, block_o), triton.cdiv(rows, block_m))
    _residual_linear_kernel[grid](
        x,
        w,
        residual,
        y,
        rows,
        fan_in,
        fan_out,
        x.stride(0),
        w.stride(0),
        residual.stride(0),
        y.stride(0),
        GATED=gated,
        BLOCK_M=block_m,
        BLOCK_O=block_o,
        BLOCK_K=BLOCK_K,
    )
    return y


def reference(
    x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor, *, gated: bool = False
) -> torch.Tensor:
    """lm.py's `post` ops for it, eager."""
    import torch.nn.functional as F

    if gated:
        gate, up = x.chunk(2, dim=-1)
        x = F.silu(gate) * up
    return residual + F.linear(x, w)
