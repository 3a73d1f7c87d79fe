"""One variable-length attention call per vision block instead of one call per window.

transformers' Qwen-VL vision attention, without the flash-attn package, splits the packed
patch sequence at every window boundary and calls SDPA once per window: a 1036x784 photo
is 70 windows, so Qwen2.5-VL's 28 windowed blocks make ~2000 small attention launches per
image. PyTorch's own `torch.nn.attention.varlen.varlen_attn` (flash attention over
cumulative sequence lengths, CUDA, fp16/bf16) does each block in one launch, on the same
`cu_seqlens` transformers already computes. Same arithmetic per window, so the result is
the stock one up to kernel rounding.

`patch_vision_attention(model)` swaps the forward of each vision attention module of one
model instance (the class is untouched); `unpatch_vision_attention` restores it (and the
patch embedding's, which `linear_patch_embed` runs as a product).
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

from mondrian.backends.transformers.engine.lm import apply_rope, rms_norm

_ORIGINAL = "_mondrian_original_forward"


def varlen_available(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _varlen_params() -> frozenset[str]:
    """varlen_attn's keyword names, read once (the prefill asks in every layer)."""
    import inspect

    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def varlen_causal(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float
) -> torch.Tensor:
    """Causal flash attention within each packed segment: q [T, heads, D], k and v
    [T, kv_heads, D] -> [T, heads, D]. Used by the packed prefill of several prompts.

    torch 2.10 spells causal `is_causal=True`, later versions `window_size=(-1, 0)`; K/V
    heads are repeated for grouped-query attention where `enable_gqa` is missing."""
    from torch.nn.attention.varlen import varlen_attn

    params = _varlen_params()
    kwargs: dict[str, Any] = {"scale": scale}
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0)
    else:
        kwargs["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    longest = _longest(cu_seqlens)
    return varlen_attn(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        cu_seqlens,
        cu_seqlens,
        longest,
        longest,
        **kwargs,
    )


_LONGEST: dict[int, tuple[torch.Tensor, int]] = {}


def _longest(cu_seqlens: torch.Tensor) -> int:
    """The longest segment of `cu_seqlens`, read from the device once per tensor.

    transformers hands every block the same two tensors (windows, whole image) and, without
    flash-attn, no maximum; reading it in every block would stall the CPU 32 times per
    image. The cache holds the tensor itself, so its id cannot be reused while cached."""
    hit = _LONGEST.get(id(cu_seqlens))
    if hit is not None and hit[0] is cu_seqlens:
        return hit[1]
    if len(_LONGEST) >= 8:
        _LONGEST.clear()
    longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    _LONGEST[id(cu_seqlens)] = (cu_seqlens, longest)
    return longest


def _attention_modules(model: Any) -> list[Any]:
    visual = model.model.visual
    return [block.attn for block in visual.blocks]


# body(module, hidden_states, (cos, sin), cu_seqlens as int32, longest window) -> output
Body = Callable[[Any, torch.Tensor, Any, torch.Tensor, int], torch.Tensor]


def _install(module: Any, body: Body) -> None:
    """Give one module instance (a vision block or its attention) a forward of transformers'
    signature that runs `body` over int32 windows and their longest length; the original
    is kept beside it for `unpatch_vision_attention`."""

    def forward(
        self: Any,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        max_seqlen: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        longest = int(max_seqlen) if max_seqlen is not None else _longest(cu_seqlens)
        cu = cu_seqlens.to(torch.int32)
        return body(self, hidden_states, position_embeddings, cu, longest)

    setattr(module, _ORIGINAL, module.forward)
    module.forward = types.MethodType(forward, module)


def _uninstall(module: Any) -> None:
    if hasattr(module, _ORIGINAL):
        del module.forward  # the instance override; the class's forward shows again
        delattr(module, _ORIGINAL)


def patch_vision_attention(model: Any) -> int:
    """Route every vision block's attention through varlen_attn; returns how many."""
    from torch.nn.attention.varlen import varlen_attn

    modules = _attention_modules(model)
    for attn in modules:
        if hasattr(attn, _ORIGINAL):
            continue
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision

        def attend(
            self: Any,
            hidden_states: torch.Tensor,
            position_embeddings: Any,
            cu: torch.Tensor,
            longest: int,
            _rope: Any = rope,
        ) -> torch.Tensor:
            seq = hidden_states.shape[0]
            q, k, v = (
                self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3)
            ).unbind(0)
            cos, sin = position_embeddings
            q, k = _rope(q, k, cos, sin)
            out = varlen_attn(
                q.contiguous(),
                k.contiguous(),
                v.contiguous(),
                cu,
                cu,
                longest,
                longest,
                scale=self.scaling,
            )
            return self.proj(out.reshape(seq, -1))

        _install(attn, attend)
    return len(modules)


def unpatch_vision_attention(model: Any) -> None:
    for attn in _attention_modules(model):
        _uninstall(attn)
    for block in model.model.visual.blocks:
        _uninstall(block)
    _uninstall(model.model.visual.patch_embed)


# --- Qwen2.5-VL vision blocks as two compiled functions around the attention ------------
#
# The eager block is GPU-bound on elementwise work, not on its matrix products: RMSNorm and
# the rotary embedding run in float32 over [patches, 1280] tensors, a dozen separate
# kernels each. Compiled (dynamic in the patch count, so any image size reuses it), each
# half is a few fused kernels around cuBLAS products; the attention stays varlen_attn.


def _block_pre(
    x: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    qkv_w: torch.Tensor,
    qkv_b: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seq = x.shape[0]
    qkv = torch.nn.functional.linear(rms_norm(x, norm_w, eps), qkv_w, qkv_b)
    q, k, v = qkv.reshape(seq, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    qf, kf = q.float(), k.float()
    q = apply_rope(qf, cos, sin).to(x.dtype)
    k = apply_rope(kf, cos, sin).to(x.dtype)
    return q.contiguous(), k.contiguous(), v.contiguous()


def _block_post(
    x: torch.Tensor,
    attn: torch.Tensor,
    proj_w: torch.Tensor,
    proj_b: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    gate_w: torch.Tensor,
    gate_b: torch.Tensor | None,
    up_w: torch.Tensor,
    up_b: torch.Tensor | None,
    down_w: torch.Tensor,
    down_b: torch.Tensor | None,
) -> torch.Tensor:
    linear = torch.nn.functional.linear
    h = x + linear(attn, proj_w, proj_b)
    y = rms_norm(h, norm_w, eps)
    y = torch.nn.functional.silu(linear(y, gate_w, gate_b)) * linear(y, up_w, up_b)
    return h + linear(y, down_w, down_b)


_COMPILED: dict[str, Any] = {}


def compile_vision_blocks(model: Any) -> int:
    """Qwen2.5-VL only (RMSNorm + SiLU gated MLP): each block's forward becomes the two
    compiled halves around varlen_attn. Returns how many blocks were switched."""
    from torch.nn.attention.varlen import varlen_attn

    visual = model.model.visual
    blocks = list(visual.blocks)
    if not blocks or type(blocks[0]).__name__ != "Qwen2_5_VLVisionBlock":
        return 0
    if getattr(visual.config, "hidden_act", "silu") != "silu":
        return 0
    if not _COMPILED:
        _COMPILED["pre"] = torch.compile(_block_pre, dynamic=True)
        _COMPILED["post"] = torch.compile(_block_post, dynamic=True)
    pre, post = _COMPILED["pre"], _COMPILED["post"]
    for block in blocks:
        if hasattr(block, _ORIGINAL):
            continue

        def run_block(
            self: Any,
            hidden_states: torch.Tensor,
            position_embeddings: Any,
            cu: torch.Tensor,
            longest: int,
        ) -> torch.Tensor:
            attn, mlp = self.attn, self.mlp
            cos, sin = position_embeddings
            q, k, v = pre(
                hidden_states,
                self.norm1.weight,
                self.norm1.variance_epsilon,
                attn.qkv.weight,
                attn.qkv.bias,
                cos,
                sin,
                attn.num_heads,
            )
            out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=attn.scaling)
            return post(
                hidden_states,
                out.reshape(hidden_states.shape[0], -1),
                attn.proj.weight,
                attn.proj.bias,
                self.norm2.weight,
                self.norm2.variance_epsilon,
                mlp.gate_proj.weight,
                mlp.gate_proj.bias,
                mlp.up_proj.weight,
                mlp.up_proj.bias,
                mlp.down_proj.weight,
                mlp.down_proj.bias,
            )

        _install(block, run_block)
    return len(blocks)


# --- the patch embedding as the product it is -------------------------------------------
#
# Qwen-VL's patch embedding is a Conv3d whose kernel equals its stride: every output sees
# one whole patch, so it is a linear map of the flattened patch. cuDNN runs it as a
# convolution (im2col and a convolution kernel, reported 10-60x slower than the product
# on some GPUs and cuDNN versions: transformers PR 45041, sglang-omni PR 132); as a product
# it is one cuBLAS call on the same weight, viewed [embed, C * T * P * P].


def linear_patch_embed(model: Any) -> bool:
    """Run the vision tower's patch embedding as a product on its own weight; False
    (nothing changed) when its convolution is not a plain patch-wise one."""
    embed = model.model.visual.patch_embed
    proj = embed.proj
    plain = (
        isinstance(proj, torch.nn.Conv3d)
        and tuple(proj.kernel_size) == tuple(proj.stride)
        and not any(proj.padding)
        and all(d == 1 for d in proj.dilation)
        and proj.groups == 1
    )
    if not plain:
        return False
    if hasattr(embed, _ORIGINAL):
        return True

    def forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        flat = hidden_states.to(weight.dtype).reshape(-1, weight[0].numel())
        return torch.nn.functional.linear(flat, weight.reshape(weight.shape[0], -1), self.proj.bias)

    setattr(embed, _ORIGINAL, embed.forward)
    embed.forward = types.MethodType(forward, embed)
    return True
