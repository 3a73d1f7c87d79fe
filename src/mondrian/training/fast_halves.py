"""The layer halves the fast training engine runs (fast_engine.py): the LM's `pre` and
`post` (engine/lm.py: norms, projections with their LoRA, rotary, the MLP), eager or
through torch.compile, and recomputed in backward under gradient checkpointing.

Why compile: eager, a training step is each layer's seventy-odd small ops forward and
about twice as many backward, each a kernel launch and an autograd node, so the CPU's
dispatch likely bounds the step; compiled, each half is a few fused kernels forward and
backward (bench/gpu_bench.py's `fast_train_step` measured its compiled step about a
quarter faster than its eager one on the H200; bench/train_bench.py --profile shows where
`mondrian train`'s step goes). The graphs are dynamic in the length, so one compilation
serves every example.

A compiler failure must not end a run. AOTAutograd compiles the backward graph at the first
backward, which happens in train.py's loop, outside any fallback; so before the first
compiled step `check` runs layer 0's halves forward and backward on a short input and on
detached copies of the LoRA (compiling both graphs, touching no parameter's gradient, the
RNG states restored). If that, or later a compiled forward, raises, the engine warns once
and trains on with the eager halves (as the serving engine's prefill.py does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.transformers.engine.lm import FastLM
from mondrian.training.fast_lora import WorkingLora

log = logging.getLogger(__name__)

BACKEND = "inductor"  # torch.compile's backend (the tests' CPU runs may pick a lighter one)
TRIAL_TOKENS = 16  # the trial pass's length: short, and not 0 or 1 (torch specialises those)


def wants_compile(setting: str, device: torch.device) -> bool:
    """The `compile` setting (auto, on, off) on `device`: auto is on with CUDA only."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


class Halves:
    """The (pre, post) pair a training forward runs, and whether it is the compiled one."""

    def __init__(self, lm: FastLM, *, compile: bool, checkpointing: bool) -> None:
        self.lm = lm
        self.checkpointing = checkpointing
        self.compiled = compile  # True while the compiled halves are the ones in use
        self.checked = False
        self._fns = _compiled(lm) if compile else (lm.pre, lm.post)

    def current(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        pre, post = self._fns
        if self.checkpointing:
            return _recomputed(pre), _recomputed(post)
        return pre, post

    def fall_back(self, exc: BaseException) -> None:
        log.warning(
            "the fast engine's compiled layer halves failed (%s: %s); training goes on with "
            "the eager ones",
            type(exc).__name__,
            exc,
        )
        self._fns = (self.lm.pre, self.lm.post)
        self.compiled = False

    def check(self, lora: WorkingLora, rowscale: torch.Tensor) -> None:
        """Once, before the first compiled step: a trial pass of layer 0, forward and
        backward; eager from here on if it fails."""
        if not self.compiled or self.checked:
            return
        self.checked = True
        try:
            _trial(self.lm, self.current(), lora.detached(), rowscale)
        except torch.OutOfMemoryError:
            raise  # not the compiler's fault: the eager halves would need more memory
        except Exception as exc:  # whatever the compiler raises
            self.fall_back(exc)


def _compiled(lm: FastLM) -> tuple[Callable[..., Any], Callable[..., Any]]:
    # Wrappers of their own: compiled caches belong to a function's code, and the serving
    # engine's prefill and decode halves (prefill.py, step.py) keep theirs apart.
    def train_pre(*args: Any) -> Any:
        return lm.pre(*args)

    def train_post(*args: Any) -> Any:
        return lm.post(*args)

    return (
        torch.compile(train_pre, dynamic=True, backend=BACKEND),
        torch.compile(train_post, dynamic=True, backend=BACKEND),
    )


def _trial(
    lm: FastLM,
    halves: tuple[Callable[..., Any], Callable[..., Any]],
    lora: WorkingLora,
    rowscale: torch.Tensor,
) -> None:
    """Layer 0 forward and backward on random hidden states of TRIAL_TOKENS tokens, the
    batch's rows and dtypes (so the real steps reuse the graphs compiled here)."""
    pre, post = halves
    device, rows, t = lm.device, rowscale.shape[0], TRIAL_TOKENS
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        hidden = torch.randn(rows, t, lm.hidden, dtype=lm.dtype, device=device)
        hidden.requires_grad_(True)  # as every layer's input is in training (fast_engine.py)
        pos3 = torch.arange(t, device=device).expand(3, rows, t)
        cos, sin = lm.rope_3d(pos3)
        pre_args, post_args = lm.layer_args(0, lora)
        q, k, v = pre(hidden, cos, sin, rowscale, *pre_args)
        attn = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=lm.head_dim**-0.5, enable_gqa=True
        )
        out = post(hidden, attn.transpose(1, 2).reshape(rows, t, lm.q_size), rowscale, *post_args)
        out.float().sum().backward()  # into the detached copies: no parameter sees it


def _recomputed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` under activation checkpointing (the dropout masks replayed: torch keeps the
    RNG state for the recomputation)."""
    from torch.utils.checkpoint import checkpoint

    def run(*args: Any) -> Any:
        return checkpoint(fn, *args, use_reentrant=False)

    return run
