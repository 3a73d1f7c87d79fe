"""The static state of a running batch: KV cache, token and position buffers, the ring of
host copies the CPU reads, and the CUDA graphs captured over them (step.py).

One state per (rows, LoRA mode), reused while it is long enough; the graphs belong to it
because they point at its buffers."""

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


def padded_rows(rows: int) -> int:
    """Batch sizes are rounded up to powers of two: each size is compiled and captured
    once, so a worker's varying batches reuse a few graphs instead of compiling each."""
    return 1 << max(0, rows - 1).bit_length()


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step
