"""One decode step on the device and how it runs: `DecodeStep` is the fixed kernel sequence,
`forward` (token buffer -> logits buffer through every layer) and `select` (logits -> the
next token, under the grammar's bitmask, with the score-token probes written aside);
`StepRunner` replays it from CUDA graphs, or runs it eagerly (CPU, tests).

With `compile`, the layer's two halves around attention and the attention itself are
`torch.compile`d, fusing norms, rotary and elementwise work into few kernels. With
`kernels` (CUDA; engine/kernels/), Triton kernels take the place of some of it: the norm
and q/k/v projection (merged or base weights), rotary + K/V write, split-KV attention,
the o and down products with their residual adds (merged or base weights); any one of
them alone (bench/kernel_ablation.py times each), the rest on torch's ops. `tuned_gemv`
compiles the halves with inductor's tuned one-row reductions (kernels/tuned_gemv.py).

The forward graph is captured per cache-length bucket, when the decode first reaches it,
so attention reads the filled part of the cache, not its capacity; the select graph once
per state. With graphs, selection's host copies are asynchronous and an event marks when
they land, so the CPU can work on the grammar while the GPU runs the next forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.decoding.calibration import zero_continuation
from mondrian.backends.transformers.engine.kernels.decode import DecodeKernels
from mondrian.backends.transformers.engine.lm import FastLM, apply_rope, lora_linear, rms_norm
from mondrian.backends.transformers.engine.lora_bank import LoraBank
from mondrian.backends.transformers.engine.state import State


def norm_linear_torch(
    x: torch.Tensor, ln: torch.Tensor, w: torch.Tensor, eps: float
) -> torch.Tensor:
    """rms_norm then the product, torch's ops (kernels/norm_linear.py's reference)."""
    return F.linear(rms_norm(x, ln, eps), w)


class DecodeStep:
    """The step's two functions over a `State`, for one LM and one decoding rule."""

    def __init__(
        self,
        lm: FastLM,
        *,
        score_ids: list[int],
        zero_prefixed_ids: list[int],
        suppressed_ids: list[int],
        compile: bool,
        kernels: DecodeKernels | None = None,
    ) -> None:
        self.lm = lm
        self.device = lm.device
        positions = torch.arange(lm.vocab, device=self.device)
        # Where each token's bit sits in the grammar's int32 bitmask.
        self._word = positions // 32
        self._bit = (positions % 32).to(torch.int32)
        self._score_ids = torch.tensor(score_ids, device=self.device)
        self._zero_ids = torch.tensor(zero_prefixed_ids, dtype=torch.long, device=self.device)
        self._suppressed = torch.tensor(suppressed_ids, dtype=torch.long, device=self.device)

        self._pre = lm.pre
        self._post = lm.post
        self._attention = lm.decode_attention
        self.compile = compile
        if compile:
            import torch._dynamo as dynamo

            # Compiled graphs per LoRA mode and half: one for a single row (static) and one
            # for every batch of more (the batch axis dynamic, `_batch_axis`); more than the
            # default cache of 8 with the residual and attention graphs beside them.
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            # With `tuned_gemv`, inductor's tuned reductions for the one-row products.
            options = (kernels.compile_options() if kernels is not None else {}) or None
            self._pre = torch.compile(lm.pre, fullgraph=True, options=options)
            self._post = torch.compile(lm.post, fullgraph=True, options=options)
            # Dynamic in the cache length: one compilation serves every length bucket.
            self._attention = torch.compile(lm.decode_attention, dynamic=True, options=options)
        # The Triton kernels that passed their check (None: torch's ops).
        self._project = kernels.projection() if kernels is not None else None
        self._rope_kv = kernels.rope_kv() if kernels is not None else None
        self._attend = kernels.attention() if kernels is not None else None
        self._residual = kernels.residual() if kernels is not None else None
        # The MLP's norm and gate|up product where `_residual` runs the layer's other half
        # and the norm kernel does not (compiled: the norm one kernel before cuBLAS's).
        self._norm_gate_up = norm_linear_torch
        if compile and self._residual is not None:
            self._norm_gate_up = torch.compile(norm_linear_torch, dynamic=False, fullgraph=True)

    def forward(self, st: State, bucket: int, bank: LoraBank | None) -> None:
        """Token buffer -> logits buffer for every row, attention over cache[:bucket];
        `bank`: the stacked adapters of a mixed state (None: the working weights)."""
        lm = self.lm
        bank = bank if st.mixed else None
        x = F.embedding(st.tok, lm.embed)[:, None]
        cos, sin = lm.rope_1d(st.rope_pos)
        # Shared by all layers, computed once per step: the additive attention mask and
        # where each row's K/V goes in the flattened cache [rows * kv_heads * length,
        # head_dim].
        mask = lengths = None
        if self._attend is None:
            span = torch.arange(bucket, device=self.device)
            mask = torch.zeros(st.rows, 1, 1, bucket, dtype=lm.dtype, device=self.device)
            mask.masked_fill_((span[None] > st.cache_pos[:, None])[:, None, None], float("-inf"))
        else:
            lengths = st.cache_pos + 1  # the kernel's bound: this token's own K/V included
        heads = torch.arange(st.rows * lm.kv_heads, device=self.device)
        slot = heads * st.length + st.cache_pos[:, None].expand(-1, lm.kv_heads).reshape(-1)
        flat = (st.rows * lm.kv_heads, lm.head_dim)
        self._batch_axis(cos, sin, st.rowscale)
        for i in range(len(lm.layers)):
            pre, post = lm.layer_args(i, bank)
            self._batch_axis(x)
            if self._rope_kv is not None or self._projects(pre):
                q = self._kernel_pre(x, cos, sin, st, i, pre, slot)
            else:
                q, k, v = self._pre(x, cos, sin, st.rowscale, *pre)
                st.k[i].view(-1, lm.head_dim).index_copy_(0, slot, k.reshape(flat))
                st.v[i].view(-1, lm.head_dim).index_copy_(0, slot, v.reshape(flat))
            if self._attend is not None:
                q = q.reshape(st.rows, lm.heads, lm.head_dim)
                attn = self._attend(q, st.k[i], st.v[i], lengths, bucket)
            else:
                q = q.reshape(st.rows, lm.heads, 1, lm.head_dim)
                attn = self._attention(q, st.k[i][:, :, :bucket], st.v[i][:, :, :bucket], mask)
            if self._residual is not None and bank is None:
                x = self._kernel_post(x, attn, post)
            else:
                self._batch_axis(attn)
                x = self._post(x, attn, st.rowscale, *post)
        hidden = rms_norm(x[:, 0], lm.norm, lm.eps)
        st.logits.copy_(lm.logits(hidden))
        st.cache_pos += 1
        st.rope_pos += 1

    def _batch_axis(self, *tensors: torch.Tensor | None) -> None:
        """With more than one row, the compiled halves see the batch axis as dynamic: one
        compilation serves every batch size above one. Static graphs, one per size, each
        compiled when a growing batch first reaches its size, held a running batch for
        seconds while it served (bench/results/2026-12-02-h200-issue21: Poisson arrivals
        at 2 req/s, p95 latency 10.9 s when other workloads had compiled some sizes first,
        16.9 s when none had: the compilations are the likely cause, not yet measured
        apart). Only at capture (and on the CPU): a graph's replay runs no Python."""
        if self.compile and tensors[0] is not None and tensors[0].shape[0] > 1:
            import torch._dynamo as dynamo

            for t in tensors:
                if t is not None:
                    dynamo.maybe_mark_dynamic(t, 0)

    def _projects(self, pre: Any) -> bool:
        """Whether the norm + q/k/v kernel serves this layer: not a mixed batch's stacked
        LoRA (`pre`'s last, B, is set), whose product stays torch's."""
        return self._project is not None and pre[-1] is None

    def _kernel_pre(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        st: State,
        i: int,
        pre: Any,
        slot: torch.Tensor,
    ) -> torch.Tensor:
        """lm.py's `pre` and the K/V write through the kernels: the norm fused into the
        q/k/v product where `_projects`, Qwen3's q/k norms in torch, then rotary + cache
        write (the kernel, or torch's rotation and index copies at `slot`). -> q [N,
        heads, D]."""
        lm = self.lm
        ln1, qkv_w, qkv_b, q_norm, k_norm, qkv_a, qkv_bb = pre
        out = lm.q_size + 2 * lm.kv_size
        if self._projects(pre):
            qkv = self._project(x[:, 0], ln1, qkv_w, qkv_b, lm.eps)
        else:
            normed = rms_norm(x, ln1, lm.eps)
            qkv = lora_linear(normed, qkv_w, qkv_b, qkv_a, qkv_bb, st.rowscale, out)[:, 0]
        q, k, v = qkv.split((lm.q_size, lm.kv_size, lm.kv_size), dim=-1)
        q = q.view(st.rows, lm.heads, lm.head_dim)
        k = k.view(st.rows, lm.kv_heads, lm.head_dim)
        v = v.view(st.rows, lm.kv_heads, lm.head_dim)
        if q_norm is not None and k_norm is not None:
            q, k = rms_norm(q, q_norm, lm.eps), rms_norm(k, k_norm, lm.eps)
        if self._rope_kv is not None:
            return self._rope_kv(q, k, v, cos[:, 0], sin[:, 0], st.cache_pos, st.k[i], st.v[i])
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # cos [N, 1, D]: every head
        st.k[i].view(-1, lm.head_dim).index_copy_(0, slot, k.reshape(-1, lm.head_dim))
        st.v[i].view(-1, lm.head_dim).index_copy_(0, slot, v.reshape(-1, lm.head_dim))
        return q

    def _kernel_post(self, x: torch.Tensor, attn: torch.Tensor, post: Any) -> torch.Tensor:
        """lm.py's `post` for merged or base weights through the kernels: the o product
        with the residual add, the norm + gate|up product, SiLU(gate) * up into the down
        product with the residual add. x [N, 1, H], attn [N, 1, heads * D] -> [N, 1, H]."""
        o_w, ln2, gu_w, down_w = post[:4]
        assert self._residual is not None
        rows = x.shape[0]
        h = self._residual(attn.reshape(rows, -1), o_w, x[:, 0])
        if self._project is not None:
            gu = self._project(h, ln2, gu_w, None, self.lm.eps)
        else:
            gu = self._norm_gate_up(h, ln2, gu_w, self.lm.eps)
        return self._residual(gu, down_w, h, gated=True)[:, None]

    def select(self, st: State) -> None:
        """Logits -> next token: probes, suppression, grammar bitmask, argmax.

        The probe row is backends/decoding/calibration.py's: raw digit logits, then log P(next
        token starts with "0") under this step's mask (two reductions, graph-capturable)."""
        scores = st.logits.float()
        digits = scores[:, self._score_ids]
        if self._suppressed.numel():
            scores = scores.index_fill(1, self._suppressed, float("-inf"))
        bits = torch.bitwise_and(torch.bitwise_right_shift(st.mask[:, self._word], self._bit), 1)
        scores = scores.masked_fill(bits == 0, float("-inf"))
        zero = zero_continuation(scores, self._zero_ids)
        st.probes.index_copy_(0, st.step, torch.cat([digits, zero[:, None]], dim=1)[None])
        st.tok.copy_(scores.argmax(dim=-1))
        st.step.add_(1).remainder_(st.probes.shape[0])  # a ring: batches that take rows in run on


class StepRunner:
    """`forward` and `select` of one decode step, through graphs when `cuda_graphs`."""

    def __init__(self, step: DecodeStep, *, cuda_graphs: bool) -> None:
        self.step = step
        self.cuda_graphs = cuda_graphs
        self._pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
        self._event: Any = torch.cuda.Event() if cuda_graphs else None

    def forward(self, st: State, bucket: int, bank: LoraBank | None) -> None:
        if self.cuda_graphs:
            if bucket not in st.forward_graphs:
                self.capture(st, [bucket], bank)
            st.forward_graphs[bucket].replay()
        else:
            self.step.forward(st, bucket, bank)

    def select(self, st: State, t: int) -> None:
        """Select step t's tokens and copy them (and the probes) to the host ring."""
        at = t % st.ring
        if self.cuda_graphs:
            st.select_graph.replay()
            st.host_tokens[at].copy_(st.tok, non_blocking=True)
            st.host_probes[at].copy_(st.probes[at], non_blocking=True)
            self._event.record()
        else:
            self.step.select(st)
            st.host_tokens[at].copy_(st.tok)
            st.host_probes[at].copy_(st.probes[at])

    def wait_for_select(self) -> None:
        """Until the last selection's host copies have landed (graphs only)."""
        if self.cuda_graphs:
            self._event.synchronize()

    def capture(self, st: State, buckets: Sequence[int], bank: LoraBank | None) -> None:
        """Capture the select graph and the forward graph of each bucket not yet captured.

        Before the prefill or between two decode steps: the warm-up passes write K/V at the
        rows' next positions (then put the positions back), which the prefill or the next
        real step overwrites before anything reads them."""
        missing = [b for b in buckets if b not in st.forward_graphs]
        if not missing and st.select_graph is not None:
            return
        saved = [t.clone() for t in (st.tok, st.cache_pos, st.rope_pos, st.step)]

        def restore() -> None:
            for dst, src in zip((st.tok, st.cache_pos, st.rope_pos, st.step), saved, strict=True):
                dst.copy_(src)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for bucket in missing:
                for _ in range(2):  # compiles on first use; then allocations settle
                    self.step.forward(st, bucket, bank)
                    restore()
            if st.select_graph is None:  # it writes a probe row: never mid-decode
                st.step.zero_()
                self.step.select(st)
                restore()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        for bucket in missing:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self.step.forward(st, bucket, bank)
            st.forward_graphs[bucket] = graph
        if st.select_graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self.step.select(st)
            st.select_graph = graph
        restore()
        torch.cuda.synchronize()
