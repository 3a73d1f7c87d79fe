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
- the vision tower's windowed attention runs as one varlen flash-attention call per block
  (backends/transformers/engine/vision.py).

Batch API: `FastPath.generate(requests, on_token)` takes any mix of prompts, adapters and
constrained/unconstrained rows and returns `Generation`s built by the backend's own
`_finish`, so results are the stock path's in form and, in float32, in tokens. The service
feeds it batches through service/batching.py, and with `admit` a running batch takes
waiting requests into its free rows between steps (continuous batching; each row is
delivered as it finishes). A batch does not grow past the rows its state was made with.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.decoding.calibration import PROBE_WIDTH, zero_continuation
from mondrian.backends.protocol import Generation, GenerationRequest, TokenCallback
from mondrian.backends.transformers.engine.lm import GROUPS, FastLM, LoraBank, rms_norm
from mondrian.images import fit_pixels

log = logging.getLogger(__name__)

BUCKET = 256  # cache-length granularity of the captured decode graphs
CAPACITY_STEP = 1024  # cache capacity granularity (a new capacity means a new state)
MIN_SLOTS = 8  # adapter slots allocated at first (grows by doubling)
PARK_STEPS = 64  # with admission, free rows' positions go back to 0 this often
PREPARE_THREADS = 8  # processor calls at once for a batch's requests
PREFILL_TOKENS = 16384  # prompt tokens packed into one prefill pass (bounds its memory)


@dataclass
class _Prepared:
    """One request's processor outputs, on the device."""

    input_ids: torch.Tensor  # [1, T]
    inputs: Any
    length: int


@dataclass
class _State:
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


class _RowProbes:
    """What `TransformersBackend._finish` reads from a DecodingControl: the probe rows
    (backends/decoding/calibration.py) of one row, one line per generated token."""

    def __init__(self, probes: torch.Tensor) -> None:
        self.probes = probes  # [tokens, calibration.PROBE_WIDTH]

    def logits_for(self, _row: int) -> torch.Tensor:
        return self.probes


@dataclass
class _Row:
    """One request in a running batch."""

    index: int  # its place among the call's requests; admitted ones follow
    request: GenerationRequest
    prepared: _Prepared
    limit: int
    matcher: Any
    start_step: int  # the step that selects its first token
    started: float
    prefilled: float
    tokens: list[int] = field(default_factory=list)
    done: bool = False


# admit(free_rows, take) -> requests now in the batch: the caller offers waiting requests
# to `take` (which prepares them and says whether they fit) and hands back those taken.
Admit = Callable[[int, Callable[[GenerationRequest], bool]], list[GenerationRequest]]
Deliver = Callable[[int, Generation], None]


class FastPath:
    """Generation for a loaded `TransformersBackend`, sharing its model and grammar."""

    def __init__(
        self,
        backend: Any,
        *,
        cuda_graphs: bool | None = None,
        compile: bool | None = None,
        vision_varlen: bool | None = None,
    ) -> None:
        from mondrian.backends.transformers.engine.vision import (
            compile_vision_blocks,
            patch_vision_attention,
            varlen_available,
        )

        self.backend = backend
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

        vocab = self.lm.vocab
        positions = torch.arange(vocab, device=self.device)
        self._word = positions // 32
        self._bit = (positions % 32).to(torch.int32)
        self._words = (vocab + 31) // 32
        self._score_ids = torch.tensor(backend.score_token_ids, device=self.device)
        self._zero_ids = torch.tensor(
            backend.grammar.zero_prefixed_ids, dtype=torch.long, device=self.device
        )
        self._suppressed = torch.tensor(
            backend.grammar.suppressed_ids, dtype=torch.long, device=self.device
        )
        self.bank: LoraBank | None = None
        self._states: dict[tuple[int, int, bool], _State] = {}
        self.profile = False  # time the prefill's parts into last_prefill (synchronises)
        self.last_prefill: dict[str, float] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._event = torch.cuda.Event() if self.cuda_graphs else None
        self._batch_matcher: Any = None
        self._preparers: ThreadPoolExecutor | None = None
        self.last_stats: dict[str, float] = {}  # of the last generate(): grammar CPU time

        self._pre = self.lm.pre
        self._post = self.lm.post
        if self.compile:
            import torch._dynamo as dynamo

            # One compiled graph per (batch size, LoRA mode) and half: more than the default
            # cache of 8 once several batch sizes are in use.
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            self._pre = torch.compile(self.lm.pre, dynamic=False, fullgraph=True)
            self._post = torch.compile(self.lm.post, dynamic=False, fullgraph=True)
        self._prefill_halves: tuple[Any, Any] | None = None
        if self.compile:
            # The prompt pass too, dynamic in its length; through wrappers of their own
            # because compiled caches belong to a function's code, and the decode halves'
            # static entries must stay apart from these.
            lm = self.lm

            def prefill_pre(*args: Any) -> Any:
                return lm.pre(*args)

            def prefill_post(*args: Any) -> Any:
                return lm.post(*args)

            self._prefill_halves = (
                torch.compile(prefill_pre, dynamic=True),
                torch.compile(prefill_post, dynamic=True),
            )
        self._attention = self.lm.decode_attention
        if self.compile:
            # Dynamic in the cache length: one compilation serves every length bucket.
            self._attention = torch.compile(self.lm.decode_attention, dynamic=True)

    # --- adapters ------------------------------------------------------------------------

    def _adapter_rank(self, name: str) -> int:
        rank = 0
        for layer in self.lm.layers:
            for module in (layer.module(t) for targets in GROUPS.values() for t in targets):
                lora_a = getattr(module, "lora_A", None)
                if lora_a is not None and name in lora_a:
                    rank = max(rank, lora_a[name].weight.shape[0])
        return rank

    def sync_adapters(self) -> None:
        """Mirror the backend's resident adapters into the bank (new ones are copied in)."""
        names = self.backend.adapters()
        if not names and self.bank is None:
            return
        rank = max((self._adapter_rank(n) for n in names), default=1)
        bank = self.bank
        if bank is None or bank.capacity < len(names) or bank.rank < rank:
            capacity = max(MIN_SLOTS, 1 << math.ceil(math.log2(max(1, len(names)))))
            if bank is not None:
                bank.merge(None)
                capacity = max(capacity, bank.capacity)
                rank = max(rank, bank.rank)
            self._states.clear()  # their graphs point at the old bank and weights
            bank = self.bank = LoraBank(self.lm, capacity, rank)
        for name in [n for n in bank.names if n is not None and n not in names]:
            bank.unload(name)
        for name in names:
            bank.load(name)

    def switch(self, adapter: str | None) -> None:
        """Merge `adapter` into the working weights (None: the base model)."""
        if self.bank is not None:
            self.bank.merge(adapter)

    # --- generation ----------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        ignore_stop: bool = False,
        mixed: bool | None = None,
        admit: Admit | None = None,
        deliver: Deliver | None = None,
        rows_hint: int = 0,
    ) -> list[Generation]:
        """Greedy generation of a batch; `ignore_stop` (benchmarks only) decodes exactly
        each row's token budget, restarting a row's grammar when its JSON completes.
        `mixed` forces the stacked-adapter path (None: only when the rows' adapters differ;
        benchmarks and tests force it to measure it on one adapter).

        Continuous batching: with `admit`, between two steps the batch takes in waiting
        requests that fit (a free row, room in the cache, an adapter this batch can serve)
        and prefills them while the others wait one step. `deliver(index, generation)` is
        called as each row finishes (admitted rows are numbered after the call's
        requests); the return value holds the call's own requests. `rows_hint`: how many
        rows to make room for (requests known to be on their way), so they can join."""
        if not requests:
            return []
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

        self.last_prefill = {}
        lap = time.perf_counter()
        prepared = self._prepare_all(requests)
        self._lap("prepare_s", lap)
        limits = [r.max_new_tokens or backend.answer_budget for r in requests]
        budget = max(limits)
        longest = max(p.length for p in prepared)
        room = max(len(requests), rows_hint if admit is not None else 0)
        state = self._state(_padded_rows(room), longest + budget + 1, mixed)
        padded = slots + [None] * (state.rows - len(slots))
        if mixed and state.rowscale is not None and self.bank is not None:
            state.rowscale.copy_(self.bank.rowscale(padded, self.device))
        if self.cuda_graphs:
            # The first bucket now; later ones when the decode reaches them (most answers
            # end long before their token budget, so most buckets are never needed).
            self._capture(state, [_round_up(longest + 1, BUCKET)])

        self._prefill(state, list(range(len(requests))), prepared, slots)
        # Free rows (padding: the batch is rounded up to a captured size) decode from
        # position 0 and are never read.
        state.cache_pos[len(requests) :] = 0
        state.rope_pos[len(requests) :] = 0
        state.step.zero_()
        if self.cuda_graphs:
            torch.cuda.synchronize()
        prefilled = time.perf_counter()

        grammar = backend.grammar
        rows: list[_Row | None] = [None] * state.rows
        for i, (request, p) in enumerate(zip(requests, prepared, strict=True)):
            matcher = grammar.matcher() if request.constrained else None
            rows[i] = _Row(i, request, p, limits[i], matcher, 0, started, prefilled)
        results: list[Generation | None] = [None] * len(requests)

        def finished(row: _Row, generation: Generation) -> None:
            if row.index < len(results):
                results[row.index] = generation
            if deliver is not None:
                deliver(row.index, generation)

        self._decode(state, rows, on_token, ignore_stop, admit, finished)
        return [g for g in results if g is not None]

    def _prepare_all(self, requests: list[GenerationRequest]) -> list[_Prepared]:
        """Processor work (chat template, resize, patches) of every request: one processor
        call per chunk of requests, the chunks on the CPU's threads. One call per photo
        costs ~12 ms each; one call for 32 photos takes as long as 32 calls (its tensor
        work runs on one thread at a time); chunks on threads overlap it (bench/NOTES.md)."""
        workers = max(1, min(PREPARE_THREADS, os.cpu_count() or 1, len(requests)))
        size = -(-len(requests) // workers)
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        if len(chunks) == 1:
            return self._prepare_chunk(chunks[0])
        if self._preparers is None:
            self._preparers = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="prepare")
        return [p for done in self._preparers.map(self._prepare_chunk, chunks) for p in done]

    def _prepare_chunk(self, requests: list[GenerationRequest]) -> list[_Prepared]:
        """One processor call for several requests, cut back into one `_Prepared` each."""
        backend = self.backend
        texts = [
            backend.processor.apply_chat_template(
                r.prompt.messages(), add_generation_prompt=True, tokenize=False
            )
            for r in requests
        ]
        per_request = [
            [fit_pixels(img, backend.max_pixels) for img in r.prompt.images] for r in requests
        ]
        images = [img for imgs in per_request for img in imgs]
        batch = backend.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        ).to(self.device)
        mask = batch["attention_mask"].bool()
        grid = batch.get("image_grid_thw")
        patches = grid.prod(-1).tolist() if grid is not None else []
        prepared, image, patch = [], 0, 0
        for row, imgs in enumerate(per_request):
            inputs: dict[str, Any] = {}
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and value.shape[:2] == mask.shape:
                    inputs[key] = value[row][mask[row]][None]  # per token: drop the padding
            if imgs:
                count = sum(patches[image : image + len(imgs)])
                inputs["image_grid_thw"] = grid[image : image + len(imgs)]
                inputs["pixel_values"] = batch["pixel_values"][patch : patch + count]
                image, patch = image + len(imgs), patch + count
            ids = inputs["input_ids"]
            prepared.append(_Prepared(input_ids=ids, inputs=inputs, length=ids.shape[1]))
        return prepared

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        return self._prepare_chunk([request])[0]

    def _prefill(
        self, st: _State, rows: list[int], prepared: list[_Prepared], slots: list[int | None]
    ) -> None:
        """Vision tower, embeddings, 3-D positions and the causal pass of several requests,
        writing their K/V into rows `rows` of the cache and their first logits into the
        state. Requests are packed into one sequence (attention stays within each), in
        groups of at most PREFILL_TOKENS tokens: one pass of large products instead of one
        small pass per request."""
        group: list[int] = []
        tokens = 0
        for i, p in enumerate(prepared):
            if group and tokens + p.length > PREFILL_TOKENS:
                self._prefill_packed(
                    st,
                    [rows[j] for j in group],
                    [prepared[j] for j in group],
                    [slots[j] for j in group],
                )
                group, tokens = [], 0
            group.append(i)
            tokens += p.length
        if group:
            self._prefill_packed(
                st,
                [rows[j] for j in group],
                [prepared[j] for j in group],
                [slots[j] for j in group],
            )

    def _prefill_packed(
        self, st: _State, rows: list[int], prepared: list[_Prepared], slots: list[int | None]
    ) -> None:
        lm, model = self.lm, self.backend.base
        lap = self._lap("", time.perf_counter())
        ids = torch.cat([p.input_ids for p in prepared], dim=1)  # [1, T]
        embeds = F.embedding(ids, lm.embed)
        with_images = [p for p in prepared if p.inputs.get("pixel_values") is not None]
        deepstack = visual_mask = None
        if with_images:
            # One vision pass over every image of the group, in token order.
            grid = torch.cat([p.inputs["image_grid_thw"] for p in with_images])
            pixels = torch.cat([p.inputs["pixel_values"] for p in with_images])
            features = model.model.get_image_features(pixels, image_grid_thw=grid)
            image = torch.cat(list(features.pooler_output)).to(embeds.dtype)
            visual_mask = ids == lm.image_token_id
            embeds = embeds.masked_scatter(visual_mask[..., None], image)
            stacked = getattr(features, "deepstack_features", None)
            if stacked:
                deepstack = [
                    torch.cat(list(f)) if isinstance(f, (list, tuple)) else f for f in stacked
                ]
        lap = self._lap("vision_s", lap)
        positions, deltas = [], []
        for p in prepared:
            pos3, delta = self._positions(p)
            positions.append(pos3)
            deltas.append(delta)
        pos3 = torch.cat(positions, dim=2)

        lengths = [p.length for p in prepared]
        row_of = torch.repeat_interleave(
            torch.tensor(rows, device=self.device), torch.tensor(lengths, device=self.device)
        )
        pos_of = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        heads = torch.arange(lm.kv_heads, device=self.device)[:, None]
        # Where each (KV head, token) of the packed pass goes in the flattened cache
        # [rows * kv_heads * length, head_dim]: one index_copy_ per layer for the group.
        flat_index = ((row_of[None] * lm.kv_heads + heads) * st.length + pos_of[None]).reshape(-1)

        def store_kv(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            st.k[i].view(-1, lm.head_dim).index_copy_(0, flat_index, k[0].reshape(-1, lm.head_dim))
            st.v[i].view(-1, lm.head_dim).index_copy_(0, flat_index, v[0].reshape(-1, lm.head_dim))

        rowscale = None
        if st.mixed and self.bank is not None:
            per_row = self.bank.rowscale(slots, self.device)  # [requests, slots]
            rowscale = torch.repeat_interleave(
                per_row, torch.tensor(lengths, device=self.device), dim=0
            )[None]
        segments = None
        if len(prepared) > 1:
            bounds = [0, *itertools.accumulate(lengths)]
            segments = torch.tensor(bounds, dtype=torch.int32, device=self.device)
        lap = self._lap("positions_s", lap)

        def pass_(halves: Any) -> torch.Tensor:
            return lm.prefill(
                embeds,
                pos3,
                lora=self.bank if st.mixed else None,
                rowscale=rowscale,
                store_kv=store_kv,
                deepstack=deepstack,
                visual_mask=visual_mask,
                segments=segments,
                halves=halves,
            )

        try:
            hidden = pass_(self._prefill_halves)
        except Exception as exc:  # a compiler failure must not take generation down
            if self._prefill_halves is None:
                raise
            log.warning("the compiled prompt pass failed (%s); using the eager one", exc)
            self._prefill_halves = None
            hidden = pass_(None)
        last = torch.tensor(list(itertools.accumulate(lengths)), device=self.device) - 1
        index = torch.tensor(rows, device=self.device)
        st.logits.index_copy_(0, index, lm.logits(hidden[0, last]).to(st.logits.dtype))
        st.cache_pos.index_copy_(0, index, torch.tensor(lengths, device=self.device))
        starts = [n + d for n, d in zip(lengths, deltas, strict=True)]
        st.rope_pos.index_copy_(0, index, torch.tensor(starts, device=self.device))
        self._lap("lm_s", lap)

    def _lap(self, key: str, began: float) -> float:
        """With `profile` on: add the time since `began` to last_prefill[key], once the GPU
        has caught up. Returns now (or `began`, unchanged, when not profiling)."""
        if not self.profile:
            return began
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if key:
            self.last_prefill[key] = self.last_prefill.get(key, 0.0) + now - began
        return now

    def _positions(self, p: _Prepared) -> tuple[torch.Tensor, int]:
        """3-D rotary positions [3, 1, T] of one prompt and its text-position offset."""
        inputs = p.inputs
        if inputs.get("pixel_values") is None:
            pos3 = torch.arange(p.length, device=self.device).view(1, 1, -1).expand(3, 1, -1)
            return pos3, 0
        ids = p.input_ids
        types = inputs.get("mm_token_type_ids")
        if types is None:
            types = (ids == self.lm.image_token_id).to(torch.int32)
        pos3, delta = self.backend.base.model.get_rope_index(
            ids,
            mm_token_type_ids=types,
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs.get("attention_mask"),
        )
        return pos3, int(delta.view(-1)[0])

    # --- the decode loop -----------------------------------------------------------------

    def _decode(
        self,
        st: _State,
        rows: list[_Row | None],
        on_token: TokenCallback | None,
        ignore_stop: bool,
        admit: Admit | None,
        finished: Callable[[_Row, Generation], None],
    ) -> None:
        stops = set(self.backend.stop_token_ids)
        ring = st.host_tokens.shape[0]
        overlap = self.cuda_graphs
        next_index = sum(r is not None for r in rows)

        stats = self.last_stats = {"steps": 0, "fill_s": 0.0, "fill_max_s": 0.0, "wait_s": 0.0}

        # The rows still generating, by their place in the state: accept() drops the ones
        # that finish, take_in() adds the ones it admits.
        live = {i: r for i, r in enumerate(rows) if r is not None and not r.done}

        masked = [True]  # whether the device mask may hold a row's constraint

        def fill_mask() -> None:
            active = {
                i: r.matcher
                for i, r in live.items()
                if r.matcher is not None and not r.matcher.is_terminated()
            }
            if not active and not masked[0]:
                return  # all ones already: nothing to fill or copy
            masked[0] = bool(active)
            began = time.perf_counter()
            st.mask_host.fill_(-1)
            if len(active) == 1:
                ((i, matcher),) = active.items()
                matcher.fill_next_token_bitmask(st.mask_host, i)
            elif active:  # rows in parallel on the CPU's threads
                self._batcher().batch_fill_next_token_bitmask(
                    list(active.values()), st.mask_host, list(active)
                )
            st.mask.copy_(st.mask_host, non_blocking=True)
            spent = time.perf_counter() - began
            stats["fill_s"] += spent
            stats["fill_max_s"] = max(stats["fill_max_s"], spent)

        def select(t: int) -> None:
            at = t % ring
            if self.cuda_graphs:
                st.select_graph.replay()
                st.host_tokens[at].copy_(st.tok, non_blocking=True)
                st.host_probes[at].copy_(st.probes[at], non_blocking=True)
                self._event.record()
            else:
                self._select(st)
                st.host_tokens[at].copy_(st.tok)
                st.host_probes[at].copy_(st.probes[at])

        def bucket_for(t: int) -> int:
            # The forward that turns token t into the logits of token t+1 writes each live
            # row's cache position (its prompt length + the tokens it has by then).
            ahead = max(r.prepared.length + t - r.start_step for r in live.values())
            return _round_up(ahead + 1, BUCKET)

        def forward(bucket: int) -> None:
            if self.cuda_graphs:
                if bucket not in st.forward_graphs:
                    self._capture(st, [bucket])
                st.forward_graphs[bucket].replay()
            else:
                self._forward(st, bucket)

        def accept(t: int) -> None:
            stats["steps"] += 1
            if self.cuda_graphs:
                began = time.perf_counter()
                self._event.synchronize()
                stats["wait_s"] += time.perf_counter() - began
            chosen = st.host_tokens[t % ring].tolist()
            for i, row in list(live.items()):
                token = chosen[i]
                row.tokens.append(token)
                matcher = row.matcher
                if matcher is not None and not matcher.is_terminated():
                    if not matcher.accept_token(token):
                        raise RuntimeError(f"grammar rejected token {token} in row {i}")
                    if ignore_stop and matcher.is_terminated():
                        matcher.reset()
                if on_token is not None:
                    on_token(row.index, len(row.tokens))
                stopped = token in stops and not ignore_stop
                if stopped or len(row.tokens) >= row.limit:
                    row.done = True
                    del live[i]
                    finished(row, self._finish_row(st, i, row, ring))

        def take_in(t: int) -> None:
            nonlocal next_index
            free = [i for i, r in enumerate(rows) if r is None or r.done]
            if admit is None or not free:
                return
            offered: dict[int, _Prepared] = {}

            def take(request: GenerationRequest) -> bool:
                prepared = self._admissible(st, request)
                if prepared is not None:
                    offered[id(request)] = prepared
                return prepared is not None

            taken = admit(len(free), take)
            if not taken:
                return
            at = free[: len(taken)]
            prepared = [offered[id(r)] for r in taken]
            slots = [self._slot(st, r) for r in taken]
            began = time.perf_counter()
            if st.mixed and st.rowscale is not None and self.bank is not None:
                index = torch.tensor(at, device=self.device)
                st.rowscale.index_copy_(0, index, self.bank.rowscale(slots, self.device))
            self._prefill(st, at, prepared, slots)
            now = time.perf_counter()
            grammar = self.backend.grammar
            for i, request, p in zip(at, taken, prepared, strict=True):
                limit = request.max_new_tokens or self.backend.answer_budget
                matcher = grammar.matcher() if request.constrained else None
                rows[i] = live[i] = _Row(next_index, request, p, limit, matcher, t + 1, began, now)
                next_index += 1

        def park_free_rows() -> None:
            # A free row decodes junk at its own position, one further each step: put it
            # back to 0 now and then so that it never runs past the cache.
            free = [i for i, r in enumerate(rows) if r is None or r.done]
            if free:
                index = torch.tensor(free, device=self.device)
                st.cache_pos.index_fill_(0, index, 0)
                st.rope_pos.index_fill_(0, index, 0)

        st.mask.fill_(-1)
        masked[0] = False
        fill_mask()
        select(0)
        t = 0
        while True:
            more = any(len(r.tokens) + 1 < r.limit for r in live.values())
            bucket = bucket_for(t) if more else 0
            if more and overlap:
                forward(bucket)  # queued behind select(t): the GPU starts at once
            accept(t)
            if more and not overlap and live:
                forward(bucket)
            if admit is not None:
                if t % PARK_STEPS == 0:
                    park_free_rows()
                take_in(t)
            if not live:
                break
            fill_mask()  # on the CPU, while the GPU runs forward(t)
            select(t + 1)
            t += 1
        if overlap:
            torch.cuda.synchronize()

    def _finish_row(self, st: _State, i: int, row: _Row, ring: int) -> Generation:
        """The Generation of a row that just finished, from host copies (no GPU wait)."""
        count = len(row.tokens)
        steps = [(row.start_step + k) % ring for k in range(max(count, 1))]
        probes = st.host_probes[steps, i].float()
        mask = torch.ones(1, row.prepared.length, dtype=torch.long)
        now = time.perf_counter()
        generation = self.backend._finish(
            0,
            row.request,
            row.tokens[: row.limit],
            _RowProbes(probes),
            {"attention_mask": mask},
            now - row.started,
        )
        decode_s = max(now - row.prefilled, 1e-9)
        generation.timings.update(
            {
                "prefill_s": round(row.prefilled - row.started, 4),
                "decode_s": round(decode_s, 4),
                "decode_tokens_per_s": round(count / decode_s, 2),
            }
        )
        return generation

    def _admissible(self, st: _State, request: GenerationRequest) -> _Prepared | None:
        """The request prepared, if it can join the batch running on `st`: its adapter is
        the merged one (or, stacked, resident in the bank) and it fits in the cache."""
        if st.mixed:
            if request.adapter is not None and (
                self.bank is None or request.adapter not in self.bank.names
            ):
                return None
        elif request.adapter != (self.bank.hot if self.bank is not None else None):
            return None
        prepared = self._prepare(request)
        limit = request.max_new_tokens or self.backend.answer_budget
        return prepared if prepared.length + limit + 1 <= st.length else None

    def _slot(self, st: _State, request: GenerationRequest) -> int | None:
        if st.mixed and request.adapter is not None and self.bank is not None:
            return self.bank.slot_of(request.adapter)
        return None

    def _batcher(self) -> Any:
        if self._batch_matcher is None:
            import xgrammar as xgr

            self._batch_matcher = xgr.BatchGrammarMatcher(max_threads=os.cpu_count() or 1)
        return self._batch_matcher

    def _forward(self, st: _State, bucket: int) -> None:
        """Token buffer -> logits buffer for every row, attention over cache[:bucket]."""
        lm = self.lm
        bank = self.bank if st.mixed else None
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

    def _select(self, st: _State) -> None:
        """Logits -> next token: probes, suppression, grammar bitmask, argmax.

        The probe row is backends/decoding/calibration.py's: raw digit logits, then log P(next token
        starts with "0") under this step's mask (two reductions, graph-capturable)."""
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

    # --- static state and graphs ---------------------------------------------------------

    def _state(self, rows: int, needed: int, mixed: bool) -> _State:
        """The state for `rows` rows and mode, with room for `needed` positions per row.

        One state per (rows, mode), reused while it is long enough (its graphs with it); a
        longer request replaces it with one of the next CAPACITY_STEP multiple."""
        for key, st in list(self._states.items()):
            if key[0] == rows and key[2] == mixed:
                if key[1] >= needed:
                    return st
                del self._states[key]
        length = _round_up(needed, CAPACITY_STEP)
        key = (rows, length, mixed)
        lm, dev = self.lm, self.device
        pin = self.cuda_graphs
        shape = (rows, lm.kv_heads, length, lm.head_dim)
        slots = self.bank.capacity if (mixed and self.bank is not None) else 0
        probes = PROBE_WIDTH
        st = _State(
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
            mask=torch.full((rows, self._words), -1, dtype=torch.int32, device=dev),
            mask_host=torch.full((rows, self._words), -1, dtype=torch.int32).pin_memory()
            if pin
            else torch.full((rows, self._words), -1, dtype=torch.int32),
            host_tokens=torch.zeros(length + 1, rows, dtype=torch.long).pin_memory()
            if pin
            else torch.zeros(length + 1, rows, dtype=torch.long),
            host_probes=torch.zeros(length + 1, rows, probes).pin_memory()
            if pin
            else torch.zeros(length + 1, rows, probes),
            k=[torch.zeros(shape, dtype=lm.dtype, device=dev) for _ in lm.layers],
            v=[torch.zeros(shape, dtype=lm.dtype, device=dev) for _ in lm.layers],
        )
        self._states[key] = st
        return st

    def _capture(self, st: _State, buckets: Sequence[int]) -> None:
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
                    self._forward(st, bucket)
                    restore()
            if st.select_graph is None:  # it writes a probe row: never mid-decode
                st.step.zero_()
                self._select(st)
                restore()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        for bucket in missing:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._forward(st, bucket)
            st.forward_graphs[bucket] = graph
        if st.select_graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._select(st)
            st.select_graph = graph
        restore()
        torch.cuda.synchronize()


def _padded_rows(rows: int) -> int:
    """Batch sizes are rounded up to powers of two: each size is compiled and captured
    once, so a worker's varying batches reuse a few graphs instead of compiling each."""
    return 1 << max(0, rows - 1).bit_length()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


__all__ = ["BUCKET", "GROUPS", "FastPath"]
