"""RMSNorm fused into the projection that follows it: y = rms_norm(x, ln) @ W.T (+ bias).

transformers' Qwen RMSNorm takes its statistics in float32 and scales in the model dtype
(lm.py `rms_norm`); the kernel rounds at the same places, so in float32 it equals the two
torch ops to the products' rounding. One program computes a block of outputs for a block
of rows: the weight is read once per step whatever the batch (rows up to BLOCK_M share a
tile), the normalised rows never leave the chip.

At a few rows the product is a stream of the weight from memory, and a program streams
from one multiprocessor: the output block is chosen so that the grid has a program for
every multiprocessor (`blocks`). At 64 outputs a block, Qwen2.5-VL-3B's q/k/v product
(2,560 outputs) was 40 programs on the H200's 132 multiprocessors, a third of the chip."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mondrian.backends.transformers.engine.kernels.grid import multiprocessors

BLOCK_M = 16  # rows per tile at most this many rows: tl.dot's smallest
LARGEST_M = 64  # rows per tile above it: one tile up to 64 rows, so the weight is read once
BLOCK_O = 64  # outputs per program when the grid fills the device anyway
SMALLEST_O = 16  # tl.dot's smallest
BLOCK_K = 128  # inputs per load: more bytes in flight per program


@triton.jit
def _norm_linear_kernel(
    x_ptr,
    ln_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    rows,
    fan_in,
    fan_out,
    eps,
    stride_x,
    stride_w,
    stride_y,
    HAS_BIAS: tl.constexpr,
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
    # Pass 1: each row's mean square, in float32.
    squares = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, fan_in, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        ok = row_ok[:, None] & (offs_k[None, :] < fan_in)
        x = tl.load(x_ptr + offs_m[:, None] * stride_x + offs_k[None, :], mask=ok, other=0.0)
        x = x.to(tl.float32)
        squares += tl.sum(x * x, axis=1)
    rstd = tl.rsqrt(squares / fan_in + eps)
    # Pass 2: the normalised tile (rounded to the model dtype, then scaled, as torch does)
    # times the weight's tile.
    acc = tl.zeros([BLOCK_M, BLOCK_O], dtype=tl.float32)
    for k0 in range(0, fan_in, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < fan_in
        ok = row_ok[:, None] & k_ok[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_x + offs_k[None, :], mask=ok, other=0.0)
        ln = tl.load(ln_ptr + offs_k, mask=k_ok, other=0.0)
        h = (x.to(tl.float32) * rstd[:, None]).to(dtype)
        h = (ln[None, :] * h).to(dtype)
        w_ok = (offs_o[None, :] < fan_out) & k_ok[:, None]
        w = tl.load(w_ptr + offs_o[None, :] * stride_w + offs_k[:, None], mask=w_ok, other=0.0)
        acc = tl.dot(h, w, acc, input_precision="ieee")
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_o, mask=offs_o < fan_out, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    ok = row_ok[:, None] & (offs_o[None, :] < fan_out)
    tl.store(y_ptr + offs_m[:, None] * stride_y + offs_o[None, :], acc.to(dtype), mask=ok)


def row_block(rows: int) -> int:
    """Rows per tile: all of a decode batch's rows in one (up to LARGEST_M)."""
    return min(LARGEST_M, max(BLOCK_M, triton.next_power_of_2(rows)))


def blocks(rows: int, fan_out: int, device: torch.device) -> int:
    """Outputs per program: the largest of 64, 32, 16 whose grid covers every
    multiprocessor (16 when none does)."""
    tiles = triton.cdiv(rows, row_block(rows))
    block = BLOCK_O
    while block > SMALLEST_O and triton.cdiv(fan_out, block) * tiles < multiprocessors(device):
        block //= 2
    return block


def norm_linear(
    x: torch.Tensor,
    ln: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    block_o: int | None = None,
) -> torch.Tensor:
    """x [N, in], ln [in], w [out, in], bias [out] or None -> [N, out] in x's dtype;
    `block_o`: outputs per program (None: `blocks`' choice)."""
    x = x.contiguous()
    rows, fan_in = x.shape
    fan_out = w.shape[0]
    y = torch.empty(rows, fan_out, dtype=x.dtype, device=x.device)
    block_o = block_o or blocks(rows, fan_out, x.device)
    block_m = row_block(rows)
    grid = (triton.cdiv(fan_out, block_o), triton.cdiv(rows, block_m))
    _norm_linear_kernel[grid](
        x,
        ln,
        w,
        bias if bias is not None else w,  # unread without HAS_BIAS
        y,
        rows,
        fan_in,
        fan_out,
        eps,
        x.stride(0),
        w.stride(0),
        y.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m,
        BLOCK_O=block_o,
        BLOCK_K=BLOCK_K,
    )
    return y


def reference(
    x: torch.Tensor, ln: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """The engine's own two ops (lm.py's `rms_norm`, then the product)."""
    from mondrian.backends.transformers.engine.lm import rms_norm

    return torch.nn.functional.linear(rms_norm(x, ln, eps), w, bias)
