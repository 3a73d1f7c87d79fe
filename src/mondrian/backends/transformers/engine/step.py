"""One decode step on the device, as the fixed kernel sequence graphs.py captures:
`forward` (token buffer -> logits buffer through every layer) and `select` (logits -> the
next token, under the grammar's bitmask, with the score-token probes written aside).

With `compile`, the layer's two halves around attention and the attention itself are
`torch.compile`d, fusing norms, rotary and elementwise work into few kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mondrian.backends.decoding.calibration import zero_continuation
from mondrian.backends.transformers.engine.lm import FastLM, rms_norm
from mondrian.backends.transformers.engine.lora_bank import LoraBank
from mondrian.backends.transformers.engine.state import State


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
        if compile:
            import torch._dynamo as dynamo

            # One compiled graph per (batch size, LoRA mode) and half: more than the default
            # cache of 8 once several batch sizes are in use.
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            self._pre = torch.compile(lm.pre, dynamic=False, fullgraph=True)
            self._post = torch.compile(lm.post, dynamic=False, fullgraph=True)
            # Dynamic in the cache length: one compilation serves every length bucket.
            self._attention = torch.compile(lm.decode_attention, dynamic=True)

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
        span = torch.arange(bucket, device=self.device)
        mask = torch.zeros(st.rows, 1, 1, bucket, dtype=lm.dtype, device=self.device)
        mask.masked_fill_((span[None] > st.cache_pos[:, None])[:, None, None], float("-inf"))
        heads = torch.arange(st.rows * lm.kv_heads, device=self.device)
        slot = heads * st.length + st.cache_pos[:, None].expand(-1, lm.kv_heads).reshape(-1)
        flat = (st.rows * lm.kv_heads, lm.head_dim)
        for i in range(len(lm.layers)):
            pre, post = lm.layer_args(i, bank)
            q, k, v = self._pre(x, cos, sin, st.rowscale, *pre)
            st.k[i].view(-1, lm.head_dim).index_copy_(0, slot, k.reshape(flat))
            st.v[i].view(-1, lm.head_dim).index_copy_(0, slot, v.reshape(flat))
            attn = self._attention(q, st.k[i][:, :, :bucket], st.v[i][:, :, :bucket], mask)
            x = self._post(x, attn, st.rowscale, *post)
        hidden = rms_norm(x[:, 0], lm.norm, lm.eps)
        st.logits.copy_(lm.logits(hidden))
        st.cache_pos += 1
        st.rope_pos += 1

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
