"""The fast generation path of the transformers backend (CUDA; CPU only for the CI test).

What it does differently from `model.generate` (bench/NOTES.md has the measurements):
- a static KV cache per (batch, length) with per-row positions, so requests of different
  prompt lengths share a batch without padding, prefilled together as one packed sequence;
- the decode step (all layers, `lm_head`) is one CUDA graph replay; graphs are captured per
  cache-length bucket, when the decode first reaches it, so attention reads the filled part
  of the cache, not its capacity;
  the layer's two halves around attention are `torch.compile`d (fusing norms, rotary and
  elementwise work into few kernels) and the graph captures what they launch;
- greedy selection is a second small graph: score-token probes, special-token suppression,
  the xgrammar bitmask applied on the GPU, argmax into the next step's input buffer;
- the grammar runs one step behind the GPU: while step t+1's forward runs, the CPU accepts
  token t into each row's matcher and fills the bitmask for step t+1; the GPU only waits
  for the CPU if the mask takes longer than a forward;
- LoRA: a batch whose rows all use one adapter runs on weights with that adapter merged
  (no per-token LoRA cost; a switch re-merges, one pass over the LM weights); a batch that
  mixes adapters runs on the base weights with every resident adapter stacked and selected
  per row inside the graph (no reload; which adapter a row uses is a number in a buffer),
  the adapters' A rows stored under the weights so one product serves both;
- the prompt pass is compiled too (dynamic in length), and a batch's processor work runs
  in chunks on the CPU's threads;
- the vision tower's windowed attention runs as one varlen flash-attention call per block,
  and its patch embedding (a convolution of kernel = stride) as the product it is
  (backends/transformers/engine/vision.py);
- on CUDA with Triton, Triton kernels (engine/kernels/) can take parts of the decode step
  (the `fast_kernels` setting; `auto`: split-KV attention, the one measured faster than
  torch's ops), each checked against its torch reference on the device first (a failing
  one falls back to torch's ops);
- the decode halves compile one graph for one row and one for every larger batch, both
  modes, before the first batch (`warm_up`): a growing batch never waits for a compiler.

Batch API: `FastPath.generate(requests, on_token)` takes any mix of prompts, adapters and
constrained/unconstrained rows and returns `Generation`s built by the backend's own
`Decoder.finish`, so results are the stock path's in form and, in float32, in tokens. The
service feeds it batches through service/batching.py, and with a `Joining` a running batch
takes waiting requests between steps (continuous batching; each row is delivered as it
finishes): into its free rows, and when those are not enough it moves into a state of
more rows (state.carry_over copies its caches across; the bigger state's graphs are
captured once, then reused), so a batch that started with one row grows to `max_rows`.

The package, by responsibility: state.py (static KV cache and buffers per batch), step.py
(one decode step's kernels, and their CUDA graph capture and replay), prepare.py
(processor work), prefill.py (packed prompt pass, positions), scheduler.py (rows joining
and finishing a running batch), decode.py (the loop), lm.py (the fused LM), lora_bank.py
(stacked and merged adapters), vision.py (varlen vision attention). This module ties them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from importlib.util import find_spec
from typing import TYPE_CHECKING

import torch

from mondrian.backends.protocol import Generation, GenerationRequest, Joining, TokenCallback
from mondrian.backends.transformers.engine.decode import BatchMatcher, DecodeLoop
from mondrian.backends.transformers.engine.kernels.decode import (
    DecodeKernels,
    Dims,
    chosen,
    passing,
)
from mondrian.backends.transformers.engine.lm import GROUPS, FastLM
from mondrian.backends.transformers.engine.lora_bank import LoraBank, adapter_rank
from mondrian.backends.transformers.engine.prefill import Laps, Prefiller
from mondrian.backends.transformers.engine.prepare import Preparer, RopeIndex
from mondrian.backends.transformers.engine.scheduler import Row, Scheduler
from mondrian.backends.transformers.engine.state import (
    BUCKET,
    State,
    States,
    carry_over,
    padded_rows,
    round_up,
)
from mondrian.backends.transformers.engine.step import DecodeStep, StepRunner

if TYPE_CHECKING:
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.prompts import Prompt

log = logging.getLogger(__name__)

MIN_SLOTS = 8  # adapter slots allocated at first (grows by doubling)
# Live rows a running batch grows to (service/batching.py's default batch size).
MAX_ROWS = 32


def warm_up_prompt() -> Prompt:
    """A small photo and a few words: what `FastPath.warm_up` runs the prompt pass on."""
    from PIL import Image

    from mondrian.prompts import Prompt

    return Prompt(system="", user="warm up", images=[Image.new("RGB", (112, 112), "gray")])


class FastPath:
    """Generation for a loaded `TransformersBackend`, sharing its model and grammar."""

    def __init__(
        self,
        backend: TransformersBackend,
        *,
        cuda_graphs: bool | None = None,
        compile: bool | None = None,
        vision_varlen: bool | None = None,
        max_rows: int = MAX_ROWS,
        kernels: bool | str | Collection[str] | None = None,
    ) -> None:
        from mondrian.backends.transformers.engine.vision import (
            compile_vision_blocks,
            linear_patch_embed,
            patch_vision_attention,
            varlen_available,
        )

        self.backend = backend
        self.max_rows = max_rows
        self.lm = FastLM(backend.base)
        self.device = self.lm.device
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        self.compile = on_cuda if compile is None else compile
        if self.cuda_graphs and not on_cuda:
            raise ValueError("CUDA graphs need a CUDA device")
        if vision_varlen is None:
            vision_varlen = varlen_available(self.device, self.lm.dtype)
        if vision_varlen:
            patch_vision_attention(backend.base)
            if self.compile:
                compile_vision_blocks(backend.base)
        if on_cuda:  # cuDNN's convolution for it is the slow one (vision.py)
            linear_patch_embed(backend.base)

        self.bank: LoraBank | None = None
        self.states = States(self.lm, pinned=self.cuda_graphs)
        if kernels is None:
            kernels = backend.fast_kernels if on_cuda else "none"
        self.kernels = self._kernels(kernels)
        grammar = backend.decoder.grammar
        self.step = DecodeStep(
            self.lm,
            score_ids=backend.decoder.score_token_ids,
            zero_prefixed_ids=grammar.zero_prefixed_ids,
            suppressed_ids=grammar.suppressed_ids,
            compile=self.compile,
            kernels=self.kernels,
        )
        self.runner = StepRunner(self.step, cuda_graphs=self.cuda_graphs)
        self.laps = Laps(self.device)
        self.prefiller = Prefiller(self.lm, backend.base, self.laps, compile=self.compile)
        rope = RopeIndex(backend.base, self.lm.image_token_id)
        self.preparer = Preparer(backend.processor, backend.max_pixels, self.device, rope)
        self.batch_matcher = BatchMatcher()
        self.last_stats: dict[str, float] = {}  # of the last generate(): grammar CPU time
        self.warmed: set[bool] = set()  # the modes (mixed or not) `warm_up` has compiled
        self.growths = 0  # running batches moved into another state (bench/arrivals.py)
        self.mode_moves = 0  # of those, merged batches moved into the mixed mode

    def _kernels(self, wanted: bool | str | Collection[str]) -> DecodeKernels | None:
        """The Triton kernels the decode step uses: those of `wanted` (a `fast_kernels`
        value: auto, all, none or names; a bool as all or none; or the names themselves)
        that pass their check here. The backend's setting on CUDA (with Triton
        installed); on the CPU only when asked (tests, under Triton's interpreter)."""
        if not isinstance(wanted, bool | str):  # names: checked, then as a setting's list
            wanted = ",".join(DecodeKernels.of(wanted).names) or "none"
        names = chosen(wanted)
        if not names:
            return None
        if find_spec("triton") is None:
            log.info("Triton is not installed; the decode step runs torch's ops")
            return None
        lm = self.lm
        dims = Dims(lm.hidden, lm.heads, lm.kv_heads, lm.head_dim)
        good = passing(self.device, lm.dtype, dims, names)
        log.info("decode kernels: %s", ", ".join(sorted(good)) or "none passed")
        return DecodeKernels(good) if good else None

    # --- profiling (bench/gpu_bench.py) --------------------------------------------------

    @property
    def profile(self) -> bool:
        """Time the prefill's parts into last_prefill (synchronises)."""
        return self.laps.profile

    @profile.setter
    def profile(self, on: bool) -> None:
        self.laps.profile = on

    @property
    def last_prefill(self) -> dict[str, float]:
        return self.laps.last

    # --- adapters ------------------------------------------------------------------------

    def sync_adapters(self) -> None:
        """Mirror the backend's resident adapters into the bank (new ones are copied in)."""
        names = self.backend.adapters()
        if not names and self.bank is None:
            return
        rank = max((adapter_rank(self.lm, n) for n in names), default=1)
        bank = self.bank
        if bank is None or bank.capacity < len(names) or bank.rank < rank:
            capacity = max(MIN_SLOTS, 1 << math.ceil(math.log2(max(1, len(names)))))
            if bank is not None:
                bank.merge(None)
                capacity = max(capacity, bank.capacity)
                rank = max(rank, bank.rank)
            self.states.clear()  # their graphs point at the old bank and weights
            bank = self.bank = LoraBank(self.lm, capacity, rank)
        for name in [n for n in bank.names if n is not None and n not in names]:
            bank.unload(name)
        for name in names:
            bank.load(name)

    def switch(self, adapter: str | None) -> None:
        """Merge `adapter` into the working weights (None: the base model)."""
        if self.bank is not None:
            self.bank.merge(adapter)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Compile the decode step for the shapes a serving batch reaches (one row and
        more, merged and mixed) before the first batch decodes, so that a batch growing
        into them later only captures graphs (milliseconds) instead of compiling (seconds,
        with every row of the batch held); and the prompt pass, merged and mixed, on a
        small photo (the vision tower's compiled blocks with it). Each mode once: the
        mixed one as soon as an adapter is resident (a server that loads its first adapter
        after its first request warms it before the next batch); nothing to do without
        compilation.

        Why the mixed prompt pass too: its halves take the stacked LoRA, a graph of their
        own. Warmed on a single adapter, the first request prefilled into a mixed batch
        compiled it while every row waited: the likely cause, not measured apart, of
        Poisson arrivals at 2 req/s taking p95 24.0 s after a one-adapter warm-up request
        (bench/results/2026-12-02-h200-issue21b; the batch made one mode move)."""
        if not self.compile:
            return
        self.sync_adapters()
        resident = [n for n in self.bank.names if n is not None] if self.bank else []
        modes = [m for m in [False] + ([True] if resident else []) if m not in self.warmed]
        if not modes:
            return
        self.warmed.update(modes)
        began = time.perf_counter()
        prompt = self.preparer.prepare(GenerationRequest(prompt=warm_up_prompt()))
        for mixed in modes:
            for rows in (1, 2):  # step.py: one static graph for a row, one for more
                st = self.state_for(rows, BUCKET, mixed)
                saved = [t.clone() for t in (st.cache_pos, st.rope_pos)]
                self.step.forward(st, BUCKET, self.bank)
                st.cache_pos.copy_(saved[0])
                st.rope_pos.copy_(saved[1])
            # The prompt pass into row 0, its positions put back as the decode's above.
            st = self.state_for(1, round_up(prompt.length + 1, BUCKET), mixed)
            saved = [t.clone() for t in (st.cache_pos, st.rope_pos)]
            slot = self.bank.slot_of(resident[0]) if mixed and self.bank else None
            self.prefiller.prefill(st, [0], [prompt], [slot], self.bank)
            st.cache_pos.copy_(saved[0])
            st.rope_pos.copy_(saved[1])
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        log.info(
            "decode step and prompt pass compiled for serving (%s) in %.1f s",
            ", ".join("mixed" if m else "merged" for m in modes),
            time.perf_counter() - began,
        )

    # --- generation ----------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        ignore_stop: bool = False,
        mixed: bool | None = None,
        joining: Joining | None = None,
    ) -> list[Generation]:
        """Greedy generation of a batch; `ignore_stop` (benchmarks only) decodes exactly
        each row's token budget, restarting a row's grammar when its JSON completes.
        `mixed` forces the stacked-adapter path (None: only when the rows' adapters differ;
        benchmarks and tests force it to measure it on one adapter).

        Continuous batching: with `joining`, between two steps the batch takes in waiting
        requests that fit (a free row, room in the cache, an adapter this batch can serve)
        and prefills them while the others wait one step. `joining.deliver(index,
        generation)` is called as each row finishes (admitted rows are numbered after the
        call's requests); the return value holds the call's own requests. The state has
        room for `joining.rows_hint` rows (requests known to be on their way)."""
        if not requests:
            return []
        self.warm_up()
        started = time.perf_counter()
        backend = self.backend
        self.sync_adapters()
        names = {r.adapter for r in requests}
        mixed = self.bank is not None and (len(names) > 1 or bool(mixed))
        if self.bank is not None:
            self.bank.merge(None if mixed else next(iter(names)))
        slots = [
            self.bank.slot_of(r.adapter) if (mixed and r.adapter is not None) else None
            for r in requests
        ]

        self.laps.last = {}
        lap = time.perf_counter()
        prepared = self.preparer.prepare_all(requests)
        self.laps.lap("prepare_s", lap)
        limits = [backend.decoder.limit(r) for r in requests]
        budget = max(limits)
        longest = max(p.length for p in prepared)
        room = max(len(requests), joining.rows_hint if joining is not None else 0)
        state = self.state_for(padded_rows(room), longest + budget + 1, mixed)
        padded = slots + [None] * (state.rows - len(slots))
        if mixed and state.rowscale is not None and self.bank is not None:
            state.rowscale.copy_(self.bank.rowscale(padded, self.device))
        if self.cuda_graphs:
            # The first bucket now; later ones when the decode reaches them (most answers
            # end long before their token budget, so most buckets are never needed).
            self.runner.capture(state, [round_up(longest + 1, BUCKET)], self.bank)

        self.prefiller.prefill(state, list(range(len(requests))), prepared, slots, self.bank)
        # Free rows (padding: the batch is rounded up to a captured size) decode from
        # position 0 and are never read.
        state.cache_pos[len(requests) :] = 0
        state.rope_pos[len(requests) :] = 0
        state.step.zero_()
        if self.cuda_graphs:
            torch.cuda.synchronize()
        prefilled = time.perf_counter()

        grammar = backend.decoder.grammar
        rows: list[Row | None] = [None] * state.rows
        for i, (request, p) in enumerate(zip(requests, prepared, strict=True)):
            matcher = grammar.matcher() if request.constrained else None
            rows[i] = Row(i, request, p, limits[i], matcher, 0, started, prefilled)
        results: list[Generation | None] = [None] * len(requests)

        def finished(row: Row, generation: Generation) -> None:
            if row.index < len(results):
                results[row.index] = generation
            if joining is not None:
                joining.deliver(row.index, generation)

        scheduler = Scheduler(
            state,
            rows,
            backend=backend,
            bank=self.bank,
            preparer=self.preparer,
            prefiller=self.prefiller,
            admit=joining.admit if joining is not None else None,
            finished=finished,
            grow=self.grow,
            max_rows=self.max_rows,
        )
        loop = DecodeLoop(
            scheduler,
            self.runner,
            self.batch_matcher,
            bank=self.bank,
            stop_token_ids=backend.decoder.stop_token_ids,
            on_token=on_token,
            ignore_stop=ignore_stop,
        )
        self.last_stats = loop.stats
        loop.run()
        return [g for g in results if g is not None]

    def grow(self, st: State, rows: int, needed: int, t: int, mixed: bool = False) -> State:
        """The running batch on `st` moved into a state of `rows` rows with room for
        `needed` positions (scheduler.py's `Grow`), between steps t and t+1; into the mixed
        mode when `mixed` (or `st` is mixed already).

        With graphs, the new state's select graph is captured before the batch moves in:
        capture's warm-up passes write its logits, which select(t+1) must read as forward(t)
        left them. Its forward graphs are captured as the decode reaches their buckets.

        Into the mixed mode, the merged adapter is taken out of the working weights (the
        stacked bank serves it from now on) and every row of `st` gets its slot: a
        merged batch's rows all ran on it. Their caches were written with it merged; the
        stacked product is the same sum in another order."""
        mixed = mixed or st.mixed
        hot = self.bank.hot if self.bank is not None else None
        if mixed and not st.mixed and self.bank is not None:
            self.bank.merge(None)
        dst = self.state_for(rows, needed, mixed)
        if self.cuda_graphs:
            self.runner.capture(dst, [], self.bank)
        carry_over(st, dst, t)
        if mixed and not st.mixed and dst.rowscale is not None and self.bank is not None:
            slot = self.bank.slot_of(hot) if hot is not None else None
            dst.rowscale[: st.rows].copy_(self.bank.rowscale([slot] * st.rows, self.device))
            self.mode_moves += 1
        self.growths += 1
        return dst

    def state_for(self, rows: int, needed: int, mixed: bool) -> State:
        """The state of `rows` rows with room for `needed` positions each; a mixed one has
        a row-scale column per slot of the current bank."""
        slots = self.bank.capacity if (mixed and self.bank is not None) else 0
        return self.states.get(rows, needed, mixed, slots)


__all__ = ["BUCKET", "GROUPS", "FastPath"]
