"""Running decode steps (step.py): replayed from CUDA graphs, or eagerly (CPU, tests).

The forward graph is captured per cache-length bucket, when the decode first reaches it,
so attention reads the filled part of the cache, not its capacity; the select graph once
per state. With graphs, selection's host copies are asynchronous and an event marks when
they land, so the CPU can work on the grammar while the GPU runs the next forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mondrian.backends.transformers.engine.lora_bank import LoraBank
from mondrian.backends.transformers.engine.state import State
from mondrian.backends.transformers.engine.step import DecodeStep


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
