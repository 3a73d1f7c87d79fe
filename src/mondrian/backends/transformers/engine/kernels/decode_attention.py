"""Split-KV decode attention (flash-decoding): one query token per row against its cache.

At one query per row, attention that gives each (row, KV head) one program reads the
whole cache on a few of the GPU's cores (bench/NOTES.md: 42 us a layer at batch 1). Here
the filled part of the cache, `bucket` positions, is cut into splits: stage 1 gives each
(row, KV head, split) a program that reduces its positions with an online softmax for
all the query heads of that KV group at once (the cache is read once per group), stage 2
combines the splits' partial sums. Positions past a row's own (`lengths`) are skipped, so
the result equals lm.py's `decode_attention` with its -inf mask.

The split length is chosen per call (`split_for`): at one row a 2,048-position bucket in
128-position splits is 16 splits x 2 KV heads = 32 programs, a quarter of an H200's
multiprocessors; shorter splits spread the same cache over all of them."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mondrian.backends.transformers.engine.kernels.grid import multiprocessors

BLOCK_G = 16  # query heads of one KV group, padded (tl.dot's smallest)
BLOCK_L = 32  # positions per inner block
SPLIT = 128  # positions per split when the grid fills the device anyway
SMALLEST_SPLIT = 32  # one inner block


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    len_ptr,
    acc_ptr,
    max_ptr,
    sum_ptr,
    scale,
    group,
    kv_heads,
    length,
    splits,
    HEAD_DIM: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    row = tl.program_id(0)
    kv = tl.program_id(1)
    split = tl.program_id(2)
    heads = kv_heads * group
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    g_ok = offs_g < group
    head = kv * group + offs_g
    q = tl.load(
        q_ptr + (row * heads + head)[:, None] * HEAD_DIM + offs_d[None, :],
        mask=g_ok[:, None],
        other=0.0,
    )
    valid = tl.load(len_ptr + row)
    start = split * SPLIT
    cache = (row * kv_heads + kv) * length * HEAD_DIM
    m = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    total = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    for l0 in range(start, start + SPLIT, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        l_ok = offs_l < valid
        k = tl.load(
            k_ptr + cache + offs_l[:, None] * HEAD_DIM + offs_d[None, :],
            mask=l_ok[:, None],
            other=0.0,
        )
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        scores = tl.where(l_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        # A split past the row's end has m_new = -inf: keep its weights at 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        v = tl.load(
            v_ptr + cache + offs_l[:, None] * HEAD_DIM + offs_d[None, :],
            mask=l_ok[:, None],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        total = total * alpha + tl.sum(p, axis=1)
        m = m_new
    at = (row * heads + head) * splits + split
    tl.store(max_ptr + at, m, mask=g_ok)
    tl.store(sum_ptr + at, total, mask=g_ok)
    tl.store(acc_ptr + at[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_ok[:, None])


@triton.jit
def _combine_kernel(
    acc_ptr,
    max_ptr,
    sum_ptr,
    out_ptr,
    splits,
    HEAD_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    row_head = tl.program_id(0)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    s_ok = offs_s < splits
    at = row_head * splits + offs_s
    m = tl.load(max_ptr + at, mask=s_ok, other=float("-inf"))
    top = tl.max(m, axis=0)
    weight = tl.where(s_ok & (m > float("-inf")), tl.exp(m - top), 0.0)
    total = tl.sum(tl.load(sum_ptr + at, mask=s_ok, other=0.0) * weight, axis=0)
    acc = tl.load(acc_ptr + at[:, None] * HEAD_DIM + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    out = tl.sum(acc * weight[:, None], axis=0) / total
    tl.store(out_ptr + row_head * HEAD_DIM + offs_d, out.to(out_ptr.dtype.element_ty))


def split_for(rows: int, kv_heads: int, bucket: int, device: torch.device) -> int:
    """Positions per split: the longest of 128, 64, 32 whose grid covers every
    multiprocessor (32 when none does)."""
    split = SPLIT
    while split > SMALLEST_SPLIT and rows * kv_heads * triton.cdiv(bucket, split) < multiprocessors(
        device
    ):
        split //= 2
    return split


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: torch.Tensor,
    bucket: int,
    split: int | None = None,
) -> torch.Tensor:
    """q [N, heads, D] (contiguous), caches [N, kv_heads, L, D] (contiguous), lengths [N]
    (positions each row attends to: 0 .. lengths - 1), `bucket` (at least every length,
    at most L: the positions the splits cover) -> [N, 1, heads * D] in q's dtype;
    `split`: positions per split, a multiple of 32 (None: `split_for`'s choice)."""
    rows, heads, head_dim = q.shape
    kv_heads, length = k_cache.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    if group > BLOCK_G or head_dim & (head_dim - 1) or bucket > length:
        raise ValueError("decode_attention: unsupported shape")
    split = split or split_for(rows, kv_heads, bucket, q.device)
    if split % BLOCK_L:
        raise ValueError(f"decode_attention: a split of {split} is not a multiple of {BLOCK_L}")
    splits = triton.cdiv(bucket, split)
    acc = torch.empty(rows, heads, splits, head_dim, dtype=torch.float32, device=q.device)
    best = torch.empty(rows, heads, splits, dtype=torch.float32, device=q.device)
    total = torch.empty(rows, heads, splits, dtype=torch.float32, device=q.device)
    _split_kernel[(rows, kv_heads, splits)](
        q.contiguous(),
        k_cache,
        v_cache,
        lengths,
        acc,
        best,
        total,
        head_dim**-0.5,
        group,
        kv_heads,
        length,
        splits,
        HEAD_DIM=head_dim,
        SPLIT=split,
        BLOCK_G=BLOCK_G,
        BLOCK_L=BLOCK_L,
    )
    out = torch.empty(rows, heads, head_dim, dtype=q.dtype, device=q.device)
    _combine_kernel[(rows * heads,)](
        acc,
        best,
        total,
        out,
        splits,
        HEAD_DIM=head_dim,
        BLOCK_S=max(2, triton.next_power_of_2(splits)),
    )
    return out.view(rows, 1, heads * head_dim)


def reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: torch.Tensor,
    bucket: int,
) -> torch.Tensor:
    """lm.py's `decode_attention` over cache[:bucket] with step.py's -inf mask."""
    rows, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    group = heads // kv_heads
    span = torch.arange(bucket, device=q.device)
    bias = torch.zeros(rows, 1, 1, bucket, dtype=q.dtype, device=q.device)
    bias.masked_fill_((span[None] >= lengths[:, None])[:, None, None], float("-inf"))
    qf = q.reshape(rows, kv_heads, group, head_dim)
    k, v = k_cache[:, :, :bucket], v_cache[:, :, :bucket]
    scores = torch.matmul(qf, k.transpose(-1, -2)).float() * head_dim**-0.5
    probs = torch.softmax(scores + bias.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v).reshape(rows, 1, heads * head_dim)
