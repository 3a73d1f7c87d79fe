"""The Qwen-VL language model as plain tensor functions over the loaded model's weights.

Why not call the transformers modules: a decode step must be a fixed sequence of kernels on
fixed buffers so that it can be captured in a CUDA graph, LoRA must be applied per batch row
from stacked adapter tensors (a mixed batch then needs no reload and a switch is an index
change), and q/k/v and gate/up must each be one matrix product, not two or three: at batch 1
a decode step is launch-bound as much as bandwidth-bound (bench/NOTES.md).

The arithmetic follows transformers' Qwen2-VL / Qwen2.5-VL / Qwen3-VL text models step by
step (RMSNorm in float32, rotary tables in float32 cast to the model dtype, PEFT's
`B(A(x)) * scaling`), so that in float32 the greedy tokens equal the stock path's (the CI
test in tests/backends/test_fast_path.py checks it).

What is shared with the transformers model and what is copied:
- embeddings, norms, `lm_head` and the vision tower are the model's own tensors;
- q/k/v and gate/up are concatenated copies (one product each);
- o and down are the model's own tensors until an adapter is merged, then copies
  (`LoraBank.merge`, lora_bank.py, writes base + scaling * B @ A into them; the model
  keeps the pristine weights, which the stock path and the next merge read).

Over 400 lines: the LM's arithmetic is kept in one place, to be read side by side with
transformers' modeling code (and `lora_linear` with it, the serving and training forms).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F


class LayerLora(Protocol):
    """What a pass multiplies by, layer by layer: `LoraBank` (lora_bank.py), or the
    training engine's view of a PEFT model's adapter (training/fast_lora.py)."""

    def layer_tensors(
        self, i: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, tuple[Any, ...]]: ...


# LoRA targets in the order of their group: a group shares one input, so its adapters'
# A matrices stack into one product (and its B matrices into one block-diagonal product).
GROUPS: dict[str, tuple[str, ...]] = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gu": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}


def base_linear(module: Any) -> Any:
    """The plain nn.Linear under a PEFT LoRA wrapper (or the module itself)."""
    return getattr(module, "base_layer", module)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' Qwen RMSNorm: statistics in float32, scale in the model dtype.
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


@dataclass
class Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv_w: torch.Tensor  # [q+k+v, hidden] (a copy: one product instead of three)
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    gu_w: torch.Tensor  # [2 * intermediate, hidden]
    down_w: torch.Tensor
    q_norm: torch.Tensor | None  # Qwen3: RMSNorm over each head's q and k
    k_norm: torch.Tensor | None
    hf: Any  # the model's decoder layer (PEFT swaps its linears for wrappers later)

    def module(self, target: str) -> Any:
        """The model's current module for a LoRA target (a PEFT wrapper once loaded)."""
        parent = (
            self.hf.mlp if target in ("gate_proj", "up_proj", "down_proj") else self.hf.self_attn
        )
        return getattr(parent, target)


class FastLM:
    """The text model of a loaded Qwen-VL `...ForConditionalGeneration`, as functions."""

    def __init__(self, model: Any) -> None:
        inner = model.model
        lm = inner.language_model
        cfg = lm.config
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported activation {cfg.hidden_act!r}")
        if getattr(cfg, "use_sliding_window", False):
            raise ValueError("sliding-window attention is not supported by the fast path")
        self.model = model
        self.config = model.config
        self.model_type = self.config.model_type
        self.hidden = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or self.hidden // self.heads
        self.eps = float(cfg.rms_norm_eps)
        self.embed = lm.embed_tokens.weight
        self.norm = lm.norm.weight
        self.lm_head = model.lm_head.weight
        self.vocab = self.lm_head.shape[0]
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        self.image_token_id = self.config.image_token_id

        rotary = lm.rotary_emb
        self.inv_freq = rotary.inv_freq.detach().float().to(self.device)
        self.attention_scaling = float(rotary.attention_scaling)
        half = self.inv_freq.shape[0]
        self.rope_select = self._rope_select(list(rotary.mrope_section), half).to(self.device)

        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.intermediate = cfg.intermediate_size
        # Dropout on the LoRA inputs (PEFT's lora_dropout): set while training
        # (training/fast_engine.py); serving leaves it 0 and its graphs never see it.
        self.lora_dropout = 0.0
        self.layers = [self._layer(layer) for layer in lm.layers]
        self.group_io = {  # group -> (input size, output sizes of its parts)
            "qkv": (self.hidden, (self.q_size, self.kv_size, self.kv_size)),
            "o": (self.q_size, (self.hidden,)),
            "gu": (self.hidden, (cfg.intermediate_size, cfg.intermediate_size)),
            "down": (cfg.intermediate_size, (self.hidden,)),
        }

    def _rope_select(self, section: list[int], half: int) -> torch.Tensor:
        """For each rotary frequency, which position component (t, h, w) drives it."""
        if sum(section) != half:
            raise ValueError(f"mrope_section {section} does not cover {half} frequencies")
        if self.model_type.startswith("qwen3"):
            # Qwen3-VL interleaves: frequency j takes h when j % 3 == 1, w when j % 3 == 2,
            # within the first 3 * section[k] frequencies; t everywhere else.
            select = [0] * half
            for comp, offset in ((1, 1), (2, 2)):
                for j in range(offset, section[comp] * 3, 3):
                    select[j] = comp
        else:  # Qwen2-VL / Qwen2.5-VL: contiguous sections t | h | w
            select = [c for c, n in enumerate(section) for _ in range(n)]
        return torch.tensor(select, dtype=torch.long)

    def _layer(self, layer: Any) -> Layer:
        att, mlp = layer.self_attn, layer.mlp
        mods = {
            "q_proj": att.q_proj,
            "k_proj": att.k_proj,
            "v_proj": att.v_proj,
            "o_proj": att.o_proj,
            "gate_proj": mlp.gate_proj,
            "up_proj": mlp.up_proj,
            "down_proj": mlp.down_proj,
        }
        lin = {name: base_linear(m) for name, m in mods.items()}
        biases = [lin[n].bias for n in ("q_proj", "k_proj", "v_proj")]
        qkv_b = None
        if any(b is not None for b in biases):
            qkv_b = torch.cat(
                [
                    b.detach() if b is not None else lin[n].weight.new_zeros(lin[n].out_features)
                    for b, n in zip(biases, ("q_proj", "k_proj", "v_proj"), strict=True)
                ]
            )
        q_norm = getattr(att, "q_norm", None)
        k_norm = getattr(att, "k_norm", None)
        return Layer(
            ln1=layer.input_layernorm.weight.detach(),
            ln2=layer.post_attention_layernorm.weight.detach(),
            qkv_w=torch.cat([lin[n].weight.detach() for n in ("q_proj", "k_proj", "v_proj")]),
            qkv_b=qkv_b,
            o_w=lin["o_proj"].weight.detach(),
            gu_w=torch.cat([lin[n].weight.detach() for n in ("gate_proj", "up_proj")]),
            down_w=lin["down_proj"].weight.detach(),
            q_norm=q_norm.weight.detach() if q_norm is not None else None,
            k_norm=k_norm.weight.detach() if k_norm is not None else None,
            hf=layer,
        )

    # --- rotary tables ----------------------------------------------------------------------

    def rope_3d(self, pos3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [N, T, head_dim] from 3-D (t, h, w) positions [3, N, T]."""
        freqs = pos3[..., None].float() * self.inv_freq  # [3, N, T, half]
        index = self.rope_select.view(1, 1, 1, -1).expand(1, *freqs.shape[1:])
        freqs = torch.gather(freqs, 0, index)[0]
        return self._cos_sin(freqs)

    def rope_1d(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [N, 1, head_dim] for one text position per row (t = h = w)."""
        return self._cos_sin(pos[:, None, None].float() * self.inv_freq)

    def _cos_sin(self, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_scaling).to(self.dtype)
        sin = (emb.sin() * self.attention_scaling).to(self.dtype)
        return cos, sin

    # --- the layer, in two halves around attention ------------------------------------------

    def layer_args(self, i: int, lora: LayerLora | None) -> tuple[Any, ...]:
        """Tensors `pre` and `post` take for layer i (arguments, so one compiled function
        serves every layer)."""
        layer = self.layers[i]
        if lora is None:
            pre = (layer.ln1, layer.qkv_w, layer.qkv_b, layer.q_norm, layer.k_norm, None, None)
            post = (layer.o_w, layer.ln2, layer.gu_w, layer.down_w, *(None,) * 6)
            return pre, post
        w, bias, la = lora.layer_tensors(i)
        pre = (layer.ln1, w["qkv"], bias, layer.q_norm, layer.k_norm, la[0], la[1])
        post = (w["o"], layer.ln2, w["gu"], w["down"], *la[2:])
        return pre, post

    def pre(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        rowscale: torch.Tensor | None,
        ln1: torch.Tensor,
        qkv_w: torch.Tensor,
        qkv_b: torch.Tensor | None,
        q_norm: torch.Tensor | None,
        k_norm: torch.Tensor | None,
        qkv_a: torch.Tensor | None,
        qkv_bb: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden [N, T, H] -> q [N, heads, T, D], k and v [N, kv_heads, T, D], rotated."""
        n, t, _ = hidden.shape
        p = self.lora_dropout
        x = rms_norm(hidden, ln1, self.eps)
        qkv = lora_linear(
            x, qkv_w, qkv_b, qkv_a, qkv_bb, rowscale, self.q_size + 2 * self.kv_size, p
        )
        q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        q = q.reshape(n, t, self.heads, self.head_dim)
        k = k.reshape(n, t, self.kv_heads, self.head_dim)
        v = v.reshape(n, t, self.kv_heads, self.head_dim)
        if q_norm is not None and k_norm is not None:
            q = rms_norm(q, q_norm, self.eps)
            k = rms_norm(k, k_norm, self.eps)
        cos, sin = cos[:, None], sin[:, None]
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        return q, k, v.transpose(1, 2)

    def post(
        self,
        hidden: torch.Tensor,
        attn: torch.Tensor,
        rowscale: torch.Tensor | None,
        o_w: torch.Tensor,
        ln2: torch.Tensor,
        gu_w: torch.Tensor,
        down_w: torch.Tensor,
        o_a: torch.Tensor | None,
        o_b: torch.Tensor | None,
        gu_a: torch.Tensor | None,
        gu_b: torch.Tensor | None,
        down_a: torch.Tensor | None,
        down_b: torch.Tensor | None,
    ) -> torch.Tensor:
        """attention output [N, T, heads*D] -> the layer's output [N, T, H]."""
        p = self.lora_dropout
        o = lora_linear(attn, o_w, None, o_a, o_b, rowscale, self.hidden, p)
        h = hidden + o
        x = rms_norm(h, ln2, self.eps)
        gu = lora_linear(x, gu_w, None, gu_a, gu_b, rowscale, 2 * self.intermediate, p)
        gate, up = gu.chunk(2, dim=-1)
        a = F.silu(gate) * up
        d = lora_linear(a, down_w, None, down_a, down_b, rowscale, self.hidden, p)
        return h + d

    # --- whole passes -----------------------------------------------------------------------

    def prefill(
        self,
        embeds: torch.Tensor,
        pos3: torch.Tensor,
        *,
        lora: LayerLora | None = None,
        rowscale: torch.Tensor | None = None,
        store_kv: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        deepstack: Sequence[torch.Tensor] | None = None,
        visual_mask: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        halves: tuple[Callable[..., Any], Callable[..., Any]] | None = None,
        layer: Callable[..., Any] | None = None,
        layer_args: Callable[[int], tuple[tuple[Any, ...], tuple[Any, ...]]] | None = None,
    ) -> torch.Tensor:
        """Causal pass over a prompt: embeds [N, T, H], positions [3, N, T] -> last hidden
        states after the final norm [N, T, H]. Hands each layer's K and V
        ([N, kv_heads, T, D]) to `store_kv(layer, k, v)` when given. Differentiable
        (training uses it).

        `segments` packs several prompts into one row (N = 1): their cumulative lengths
        [0, t1, t1 + t2, ...] (int32, on the device); attention stays inside each prompt.
        `rowscale` may then be per token, [1, T, slots]. `halves` replaces `pre` and `post`
        (compiled versions of them); `layer`, with neither `store_kv` nor `segments`,
        replaces each whole layer (`layer`'s signature: the training engine compiles it
        as one graph, attention inside). `layer_args(i)`, with them, gives the arguments
        they take for layer i where those are not `self.layer_args(i, lora)` (the training
        engine's halves take each half's LoRA as one tensor: training/fast_lora.py)."""
        pre_fn, post_fn = halves or (self.pre, self.post)
        if store_kv is not None or segments is not None:
            layer = None
        cos, sin = self.rope_3d(pos3)
        hidden = embeds
        for i in range(len(self.layers)):
            pre, post = layer_args(i) if layer_args else self.layer_args(i, lora)
            if layer is not None:
                hidden = layer(hidden, cos, sin, rowscale, pre, post)
            else:
                q, k, v = pre_fn(hidden, cos, sin, rowscale, *pre)
                if store_kv is not None:
                    store_kv(i, k, v)
                attn = self.prompt_attention(q, k, v, segments)
                hidden = post_fn(hidden, attn, rowscale, *post)
            if deepstack is not None and visual_mask is not None and i < len(deepstack):
                # Qwen3-VL: vision features of intermediate blocks join the first layers.
                hidden = hidden.clone()
                hidden[visual_mask] = hidden[visual_mask] + deepstack[i].to(hidden.dtype)
        return rms_norm(hidden, self.norm, self.eps)

    def prompt_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal attention of a prompt pass: q [N, heads, T, D], k and v [N, kv_heads, T,
        D] (`segments`: packed prompts, N = 1) -> [N, T, heads*D], `post`'s input."""
        n, _, t, _ = q.shape
        if segments is None:
            attn = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.head_dim**-0.5, enable_gqa=True
            )
        else:
            attn = packed_causal_attention(q, k, v, segments, self.head_dim**-0.5)
        return attn.transpose(1, 2).reshape(n, t, self.q_size)

    def layer(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        rowscale: torch.Tensor | None,
        pre: tuple[Any, ...],
        post: tuple[Any, ...],
    ) -> torch.Tensor:
        """One whole layer of an unpacked prompt pass, cache aside: `pre`, attention,
        `post` (`pre` and `post`: `layer_args`' two tuples). [N, T, H] -> [N, T, H]."""
        q, k, v = self.pre(hidden, cos, sin, rowscale, *pre)
        return self.post(hidden, self.prompt_attention(q, k, v), rowscale, *post)

    def decode_attention(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        bias: torch.Tensor,
    ) -> torch.Tensor:
        """One query token per row against the cache: q [N, heads, 1, D], caches
        [N, kv_heads, L, D], bias [N, 1, 1, L] (0 where valid, -inf past the row's
        position) -> [N, 1, heads*D].

        The query heads of a KV group fold into the query-length axis, so the cache is
        read once per group and never repeated in memory. Two batched products and a
        softmax rather than SDPA: at one query per row the fused attention kernels run
        one block per (row, KV head) over the whole cache (42 us a layer at batch 1 on an
        H200, bench/NOTES.md), while the products spread the cache over the whole GPU."""
        n = q.shape[0]
        group = self.heads // self.kv_heads
        qf = q.reshape(n, self.kv_heads, group, self.head_dim)
        scores = torch.matmul(qf, k_cache.transpose(-1, -2)).float() * self.head_dim**-0.5
        probs = torch.softmax(scores + bias.float(), dim=-1).to(q.dtype)
        return torch.matmul(probs, v_cache).reshape(n, 1, self.q_size)

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_last, self.lm_head)


def packed_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: torch.Tensor, scale: float
) -> torch.Tensor:
    """Causal attention within each packed prompt: q [1, heads, T, D], k and v
    [1, kv_heads, T, D], `segments` cumulative lengths -> [1, heads, T, D].

    On CUDA in half precision one flash-attention call over all prompts (torch's varlen_attn,
    which has no float32 kernel); elsewhere one SDPA call per prompt, the same arithmetic
    as an unpacked prefill."""
    if q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
        from mondrian.backends.transformers.engine.vision import varlen_causal

        return varlen_causal(
            q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), segments, scale
        ).transpose(0, 1)[None]
    bounds = segments.tolist()
    parts = [
        F.scaled_dot_product_attention(
            q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True, scale=scale, enable_gqa=True
        )
        for s, e in itertools.pairwise(bounds)
    ]
    return torch.cat(parts, dim=2)


def lora_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor | None,
    b: torch.Tensor | tuple[torch.Tensor, ...] | None,
    rowscale: torch.Tensor | None,
    out: int,
    dropout: float = 0.0,
) -> torch.Tensor:
    """A linear layer with per-row LoRA over stacked adapters: x [N, T, in] -> [N, T, out].

    Without `b` (or `rowscale`): plain `x @ w.T + bias`. With them, every resident adapter
    applies and the row's scale selects its own: b [out, S*R], rowscale [N, S] (the row's
    adapter's scaling in its slot, zeros elsewhere) or, for packed prompts, [N, T, S] (per
    token). The adapters' A [S*R, in] is `a` when given; otherwise `w` carries it below its
    own rows ([out + S*R, in], `LoraBank(fused=True)`), so one product yields the layer's
    output and every adapter's x @ A.T together.

    Every row multiplies all S adapters' A and the mask keeps its own; that reads each
    adapter's weights once per step whatever the batch, where gathering per-row A and B
    would read them once per row.

    `b` as a tuple (training, one slot: training/fast_lora.py): each part's own B
    [out_p, r_p], in the group's order; part p's B multiplies its r_p columns of x @ A.T
    and the parts' outputs are concatenated: the block-diagonal B's product without
    building it (no zeros, no copy of PEFT's B).

    `dropout` (training, unfused only) drops the LoRA's input as PEFT's lora_dropout does;
    one mask per group, where PEFT draws one per target (the same rate on every input)."""
    y = F.linear(x, w, bias)
    if b is None or rowscale is None:
        return y
    if a is None:
        y, xa = y.split((out, y.shape[-1] - out), dim=-1)
    else:
        xa = F.linear(F.dropout(x, dropout) if dropout else x, a)
    n, t, _ = x.shape
    slots = rowscale.shape[-1]
    scale = rowscale[:, None, :, None] if rowscale.dim() == 2 else rowscale[..., None]
    xa = (xa.reshape(n, t, slots, -1) * scale.to(xa.dtype)).view(n, t, -1)
    if isinstance(b, tuple):
        cols = xa.split([part.shape[1] for part in b], dim=-1)
        parts = [F.linear(c, part) for c, part in zip(cols, b, strict=True)]
        return y + (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))
    return y + F.linear(xa, b)
