"""The static state of a running batch: KV cache, token and position buffers, the ring of
host copies the CPU reads, and the CUDA graphs captured over them (step.py).

One state per (rows, LoRA mode), reused while it is long enough; the graphs belong to it
because they point at its buffers. A running batch grows by moving into a bigger state
between two steps (`carry_over`: its rows' caches, positions, logits and rings copied
across), so a batch that started with one row can take in more whatever its start."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mondrian.backends.decoding.calibration import PROBE_WIDTH
from mondrian.backends.transformers.engine.lm import FastLM

BUCKET = 256  # cache-length granularity of the captured decode graphs
CAPACITY_STEP = 1024  # cache capacity granularity (a new capacity means a new state)


@dataclass
class State:
    """Static buffers (and the graphs captured over them) for one batch size and capacity."""

    rows: int
    length: int
    mixed: bool
    tok: torch.Tensor
    cache_pos: torch.Tensor
    rope_pos: torch.Tensor
    step: torch.Tensor
    rowscale: torch.Tensor | None
    logits: torch.Tensor
    probes: torch.Tensor  # [ring, rows, score tokens], written at step % ring
    mask: torch.Tensor
    mask_host: torch.Tensor
    host_tokens: torch.Tensor  # [ring, rows], copied from `tok` after each selection
    host_probes: torch.Tensor  # [ring, rows, score tokens], copied from `probes` likewise
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    forward_graphs: dict[int, Any] = field(default_factory=dict)
    select_graph: Any = None

    @property
    def ring(self) -> int:
        """How many steps the host copies hold before they wrap around."""
        return self.host_tokens.shape[0]


class States:
    """The states made so far, by (rows, length, mixed); `by_key` is the dict itself."""

    def __init__(self, lm: FastLM, *, pinned: bool) -> None:
        self.lm = lm
        self.pinned = pinned  # page-locked host buffers, for asynchronous copies (CUDA)
        self.words = (lm.vocab + 31) // 32  # the grammar bitmask's int32 words per row
        self.by_key: dict[tuple[int, int, bool], State] = {}

    def clear(self) -> None:
        self.by_key.clear()

    def get(self, rows: int, needed: int, mixed: bool, slots: int) -> State:
        """The state for `rows` rows and mode, with room for `needed` positions per row;
        `slots`: the adapter bank's capacity (the width of a mixed state's row scales).

        One state per (rows, mode), reused while it is long enough (its graphs with it); a
        longer request replaces it with one of the next CAPACITY_STEP multiple."""
        for key, st in list(self.by_key.items()):
            if key[0] == rows and key[2] == mixed:
                if key[1] >= needed:
                    return st
                del self.by_key[key]
        length = round_up(needed, CAPACITY_STEP)
        key = (rows, length, mixed)
        lm, dev = self.lm, self.lm.device
        pin = self.pinned
        shape = (rows, lm.kv_heads, length, lm.head_dim)
        probes = PROBE_WIDTH
        st = State(
            rows=rows,
            length=length,
            mixed=mixed,
            tok=torch.zeros(rows, dtype=torch.long, device=dev),
            cache_pos=torch.zeros(rows, dtype=torch.long, device=dev),
            rope_pos=torch.zeros(rows, dtype=torch.long, device=dev),
            step=torch.zeros(1, dtype=torch.long, device=dev),
            rowscale=torch.zeros(rows, slots, device=dev) if mixed else None,
            logits=torch.zeros(rows, lm.vocab, dtype=lm.dtype, device=dev),
            probes=torch.zeros(length + 1, rows, probes, device=dev),
            mask=torch.full((rows, self.words), -1, dtype=torch.int32, device=dev),
            mask_host=torch.full((rows, self.words), -1, dtype=torch.int32).pin_memory()
            if pin
            else torch.full((rows, self.words), -1, dtype=torch.int32),
            host_tokens=torch.zeros(length + 1, rows, dtype=torch.long).pin_memory()
            if pin
            else torch.zeros(length + 1, rows, dtype=torch.long),
            host_probes=torch.zeros(length + 1, rows, probes).pin_memory()
            if pin
            else torch.zeros(length + 1, rows, probes),
            k=[torch.zeros(shape, dtype=lm.dtype, device=dev) for _ in lm.layers],
            v=[torch.zeros(shape, dtype=lm.dtype, device=dev) for _ in lm.layers],
        )
        self.by_key[key] = st
        return st


def carry_over(src: State, dst: State, t: int) -> None:
    """Move a running batch from `src` into the bigger (or mixed) `dst` between steps t and
    t+1 (after forward(t), before select(t+1)): rows keep their places, the rest of `dst`
    is free.

    Both rings are indexed by step modulo their size, so the steps still held (the last
    `src.ring`) are copied to their places in `dst`'s ring; the device step counter, which
    select(t+1) writes at, becomes (t+1) modulo `dst`'s."""
    if dst.rows < src.rows or dst.length < src.length or (src.mixed and not dst.mixed):
        raise ValueError("a batch only grows: more rows, as long or longer, merged to mixed")
    n, length = src.rows, src.length
    for name in ("tok", "cache_pos", "rope_pos", "logits", "mask", "mask_host"):
        getattr(dst, name)[:n].copy_(getattr(src, name))
    for name in ("cache_pos", "rope_pos"):
        getattr(dst, name)[n:] = 0  # free rows decode from position 0 and are never read
    dst.mask[n:] = -1
    dst.mask_host[n:] = -1
    if dst.rowscale is not None:  # from a merged state, the caller sets the rows' scales
        if src.rowscale is not None:
            dst.rowscale[:n].copy_(src.rowscale)
        dst.rowscale[n:] = 0
    for k_src, k_dst, v_src, v_dst in zip(src.k, dst.k, src.v, dst.v, strict=True):
        k_dst[:n, :, :length].copy_(k_src)
        v_dst[:n, :, :length].copy_(v_src)
    steps = torch.arange(max(0, t + 1 - src.ring), t + 1)
    at_src, at_dst = steps % src.ring, steps % dst.ring
    dst.host_tokens[at_dst, :n] = src.host_tokens[at_src]
    dst.host_probes[at_dst, :n] = src.host_probes[at_src]
    device = dst.probes.device
    dst.probes[at_dst.to(device), :n] = src.probes[at_src.to(device)]
    dst.step.fill_((t + 1) % dst.ring)


def padded_rows(rows: int) -> int:
    """Batch sizes are rounded up to powers of two: each size is compiled and captured
    once, so a worker's varying batches reuse a few graphs instead of compiling each."""
    return 1 << max(0, rows - 1).bit_length()


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step
