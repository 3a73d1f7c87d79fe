"""The layer halves the fast training engine runs (fast_engine.py): the LM's `pre` and
`post` (engine/lm.py: norms, projections with their LoRA, rotary, the MLP), eager or
through torch.compile, and recomputed in backward under gradient checkpointing. With the
`compile_unit` setting `layer`, each whole layer (`FastLM.layer`: the halves and the
attention between them) is one compiled graph instead of two around an eager attention.

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
and trains on with the eager halves (as the serving engine's prefill.py does); compiled
whole layers that fail fall back to the compiled halves first, with their own trial.

Why whole layers: a compiled step is bound by the CPU's work around the kernels as much
as by them (bench/results/2026-12-02-h200-issue21: 108 ms of kernels in a 158 ms step),
and each compiled call costs a guard check, an autograd function forward and backward
and its wrapper's launches; one graph a layer halves those calls and fuses the layout
changes around attention into the halves' kernels.

Why the C++ wrapper (`compile_launch` cpp, the default): the same CPU bound, from the
other side. Inductor's Python wrapper launches each of a graph's kernels from Python; its
C++ wrapper does it from compiled code. On the H200 the step went from 240.4 to 162.5 ms
with the same kernels (bench/results/2026-12-02-h200-issue21c), for ~20 s more of
compilation at the first step. If it fails (no C++ compiler, say), the halves compile
again with the Python wrapper, their own trial first, before eager. Replaying the halves
as CUDA graphs (inductor's cudagraph trees) measured slower there, 270.8 ms: each layer's
call is a graph of its own whose inputs are copied in, and the trees fall off their fast
path while 36 layers' backwards wait.

The halves take each half's LoRA as one flat chunk (fast_lora.py's `packed_args`) and cut
it into the groups' A and B views inside the graph: fewer autograd nodes and compiled
inputs around each call, the same arithmetic (fast_lora.py says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mondrian.backends.transformers.engine.lm import FastLM
from mondrian.training.fast_lora import Packing, WorkingLora

log = logging.getLogger(__name__)

BACKEND = "inductor"  # torch.compile's backend (the tests' CPU runs may pick a lighter one)
TRIAL_TOKENS = 16  # the trial pass's length: short, and not 0 or 1 (torch specialises those)


def wants_compile(setting: str, device: torch.device) -> bool:
    """The `compile` setting (auto, on, off) on `device`: auto is on with CUDA only."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


UNITS = ("halves", "layer")  # what one compiled graph covers (TrainConfig.compile_unit)

# How a compiled graph's kernels are launched (TrainConfig.compile_launch): inductor's
# options for each.
LAUNCH: dict[str, dict[str, Any]] = {"python": {}, "cpp": {"cpp_wrapper": True}}


class Halves:
    """The (pre, post) pair a training forward runs, or the whole layer it runs instead
    (`layer`, compiled only), and whether they are the compiled ones."""

    def __init__(
        self,
        lm: FastLM,
        packing: Packing,
        *,
        compile: bool,
        checkpointing: bool,
        unit: str = "halves",
        launch: str = "cpp",
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unknown compile unit {unit!r}: use {' or '.join(UNITS)}")
        if launch not in LAUNCH:
            raise ValueError(f"unknown compile launch {launch!r}: use {', '.join(LAUNCH)}")
        self.lm = lm
        self.checkpointing = checkpointing
        self.compiled = compile  # True while the compiled halves are the ones in use
        self.checked = False
        self.launch = launch if compile else None
        self._eager = _packed(lm, packing)
        self._fns = _compiled(self._eager, launch) if compile else self._eager
        self._layer = None
        if compile and unit == "layer":
            self._layer = _compiled_layer(_packed_layer(lm, packing), launch)

    @property
    def unit(self) -> str:
        """What one compiled graph covers now: `layer` until a fallback, else `halves`."""
        return "layer" if self._layer is not None else "halves"

    def current(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The (pre, post) pair: `FastLM.pre` and `post` taking `packed_args`' tensors."""
        pre, post = self._fns
        if self.checkpointing:
            return _recomputed(pre), _recomputed(post)
        return pre, post

    def layer(self) -> Callable[..., Any] | None:
        """The compiled whole layer (recomputed under checkpointing), or None."""
        if self._layer is None:
            return None
        return _recomputed(self._layer) if self.checkpointing else self._layer

    def fall_back(self, exc: BaseException) -> None:
        """Compiled layers -> compiled halves -> the halves through inductor's Python
        wrapper (each with a trial to come) -> eager halves."""
        if self._layer is not None:
            log.warning(
                "the fast engine's compiled layers failed (%s: %s); training goes on with "
                "the compiled layer halves",
                type(exc).__name__,
                exc,
            )
            self._layer = None
            self.checked = False
            return
        if self.launch == "cpp":
            log.warning(
                "the fast engine's compiled layer halves failed with inductor's C++ wrapper "
                "(%s: %s); training goes on with them compiled with its Python wrapper",
                type(exc).__name__,
                exc,
            )
            self._fns = _compiled(self._eager, "python")
            self.launch = "python"
            self.checked = False
            return
        log.warning(
            "the fast engine's compiled layer halves failed (%s: %s); training goes on with "
            "the eager ones",
            type(exc).__name__,
            exc,
        )
        self._fns = self._eager
        self.compiled = False
        self.launch = None

    def check(self, lora: WorkingLora, rowscale: torch.Tensor) -> None:
        """Once, before the first compiled step: a trial pass of layer 0, forward and
        backward; the next unit down from here on if it fails (and its own trial)."""
        while self.compiled and not self.checked:
            self.checked = True
            try:
                _trial(self.lm, self.current(), self.layer(), lora.detached(), rowscale)
            except torch.OutOfMemoryError:
                raise  # not the compiler's fault: the eager halves would need more memory
            except Exception as exc:  # whatever the compiler raises
                self.fall_back(exc)


def _compile(fn: Callable[..., Any], launch: str) -> Callable[..., Any]:
    options = LAUNCH[launch]
    if BACKEND != "inductor" or not options:  # inductor's options; other backends take none
        return torch.compile(fn, dynamic=True, backend=BACKEND)
    return torch.compile(fn, dynamic=True, backend=BACKEND, options=options)


def _packed(lm: FastLM, packing: Packing) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """`lm.pre` and `lm.post` taking each half's LoRA as its one chunk (packed_args)."""

    # Functions of their own: compiled caches belong to a function's code, and the
    # serving engine's prefill and decode halves (prefill.py, step.py) keep theirs apart.
    def train_pre(hidden: Any, cos: Any, sin: Any, rowscale: Any, *frozen: Any) -> Any:
        *frozen, lora = frozen  # ln1 ... k_norm, then the LoRA's chunk
        return lm.pre(hidden, cos, sin, rowscale, *frozen, *packing.unpack_pre(lora))

    def train_post(hidden: Any, attn: Any, rowscale: Any, *frozen: Any) -> Any:
        *frozen, lora = frozen  # o_w ... down_w, then the LoRA's chunk
        return lm.post(hidden, attn, rowscale, *frozen, *packing.unpack_post(lora))

    return train_pre, train_post


def _packed_layer(lm: FastLM, packing: Packing) -> Callable[..., Any]:
    """`lm.layer` taking packed_args' two tuples."""

    def train_layer(
        hidden: Any, cos: Any, sin: Any, rowscale: Any, pre: tuple[Any, ...], post: Any
    ) -> Any:
        *pre_frozen, pre_lora = pre
        *post_frozen, post_lora = post
        pre = (*pre_frozen, *packing.unpack_pre(pre_lora))
        post = (*post_frozen, *packing.unpack_post(post_lora))
        return lm.layer(hidden, cos, sin, rowscale, pre, post)

    return train_layer


def _compiled(
    halves: tuple[Callable[..., Any], Callable[..., Any]], launch: str
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    return _compile(halves[0], launch), _compile(halves[1], launch)


def _compiled_layer(layer: Callable[..., Any], launch: str) -> Callable[..., Any]:
    return _compile(layer, launch)


def _trial(
    lm: FastLM,
    halves: tuple[Callable[..., Any], Callable[..., Any]],
    layer: Callable[..., Any] | None,
    lora: WorkingLora,
    rowscale: torch.Tensor,
) -> None:
    """Layer 0 forward and backward on random hidden states of TRIAL_TOKENS tokens, the
    batch's rows and dtypes (so the real steps reuse the graphs compiled here), through
    `layer` when given, else `halves`."""
    pre, post = halves
    device, rows, t = lm.device, rowscale.shape[0], TRIAL_TOKENS
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        hidden = torch.randn(rows, t, lm.hidden, dtype=lm.dtype, device=device)
        hidden.requires_grad_(True)  # as every layer's input is in training (fast_engine.py)
        pos3 = torch.arange(t, device=device).expand(3, rows, t)
        cos, sin = lm.rope_3d(pos3)
        pre_args, post_args = lora.packed_args(0)
        if layer is not None:
            out = layer(hidden, cos, sin, rowscale, pre_args, post_args)
        else:
            q, k, v = pre(hidden, cos, sin, rowscale, *pre_args)
            out = post(hidden, lm.prompt_attention(q, k, v), rowscale, *post_args)
        out.float().sum().backward()  # into the detached copies: no parameter sees it


def _recomputed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` under activation checkpointing (the dropout masks replayed: torch keeps the
    RNG state for the recomputation)."""
    from torch.utils.checkpoint import checkpoint

    def run(*args: Any) -> Any:
        return checkpoint(fn, *args, use_reentrant=False)

    return run
