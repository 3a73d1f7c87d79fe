"""Rotary embedding of one decode token's q and k, and its K/V cache write, in one kernel.

The torch step rotates q and k (two passes of several elementwise ops each) and writes K
and V with two index copies; here one program per (row, head) reads its head once,
rotates it (`x * cos + rotate_half(x) * sin`, rounded as lm.py's `apply_rope` rounds in
the model dtype) and writes it: q heads to the output, k heads rotated and v heads as
they are to the cache at the row's position."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_kv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    q_out_ptr,
    k_cache_ptr,
    v_cache_ptr,
    heads,
    kv_heads,
    length,
    stride_q_row,
    stride_q_head,
    stride_k_row,
    stride_k_head,
    stride_v_row,
    stride_v_head,
    stride_cs,
    HEAD_DIM: tl.constexpr,
):
    row = tl.program_id(0)
    head = tl.program_id(1)
    half: tl.constexpr = HEAD_DIM // 2
    offs = tl.arange(0, half)
    dtype = q_ptr.dtype.element_ty
    cos_lo = tl.load(cos_ptr + row * stride_cs + offs)
    cos_hi = tl.load(cos_ptr + row * stride_cs + half + offs)
    sin_lo = tl.load(sin_ptr + row * stride_cs + offs)
    sin_hi = tl.load(sin_ptr + row * stride_cs + half + offs)
    if head < heads:
        base = q_ptr + row * stride_q_row + head * stride_q_head
        lo = tl.load(base + offs)
        hi = tl.load(base + half + offs)
        out = q_out_ptr + (row * heads + head) * HEAD_DIM
        tl.store(out + offs, ((lo * cos_lo).to(dtype) + (-hi * sin_lo).to(dtype)).to(dtype))
        tl.store(out + half + offs, ((hi * cos_hi).to(dtype) + (lo * sin_hi).to(dtype)).to(dtype))
    else:
        kv = head - heads
        pos = tl.load(pos_ptr + row)
        slot = ((row * kv_heads + kv) * length + pos) * HEAD_DIM
        base = k_ptr + row * stride_k_row + kv * stride_k_head
        lo = tl.load(base + offs)
        hi = tl.load(base + half + offs)
        k_lo = ((lo * cos_lo).to(dtype) + (-hi * sin_lo).to(dtype)).to(dtype)
        k_hi = ((hi * cos_hi).to(dtype) + (lo * sin_hi).to(dtype)).to(dtype)
        tl.store(k_cache_ptr + slot + offs, k_lo)
        tl.store(k_cache_ptr + slot + half + offs, k_hi)
        v_base = v_ptr + row * stride_v_row + kv * stride_v_head
        tl.store(v_cache_ptr + slot + offs, tl.load(v_base + offs))
        tl.store(v_cache_ptr + slot + half + offs, tl.load(v_base + half + offs))


def rope_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    """q [N, heads, D], k and v [N, kv_heads, D] (views: last axis contiguous), cos and
    sin [N, D], pos [N] (each row's cache position), caches [N, kv_heads, L, D]
    (contiguous) -> rotated q [N, heads, D]; rotated k and v written at `pos`."""
    rows, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    if head_dim & (head_dim - 1) or q.stride(2) != 1 or k.stride(2) != 1 or v.stride(2) != 1:
        raise ValueError("rope_kv needs a power-of-two head size and contiguous heads")
    cos, sin = cos.contiguous(), sin.contiguous()
    q_out = torch.empty(rows, heads, head_dim, dtype=q.dtype, device=q.device)
    _rope_kv_kernel[(rows, heads + kv_heads)](
        q,
        k,
        v,
        cos,
        sin,
        pos,
        q_out,
        k_cache,
        v_cache,
        heads,
        kv_heads,
        k_cache.shape[2],
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        cos.stride(0),
        HEAD_DIM=head_dim,
    )
    return q_out


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    """The torch step's own ops: lm.py's `apply_rope`, then step.py's index copies."""
    from mondrian.backends.transformers.engine.lm import apply_rope

    rows, kv_heads, head_dim = k.shape
    q_rot = apply_rope(q, cos[:, None], sin[:, None])
    k_rot = apply_rope(k, cos[:, None], sin[:, None])
    length = k_cache.shape[2]
    heads = torch.arange(rows * kv_heads, device=k.device)
    slot = heads * length + pos[:, None].expand(-1, kv_heads).reshape(-1)
    k_cache.view(-1, head_dim).index_copy_(0, slot, k_rot.reshape(-1, head_dim))
    v_cache.view(-1, head_dim).index_copy_(0, slot, v.reshape(-1, head_dim))
    return q_rot
