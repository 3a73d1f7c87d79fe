"""The rows of one running batch: which are still generating, which waiting requests join
it between two steps (continuous batching: into its free rows, or into a bigger state the
batch moves to when they are not enough, up to `max_rows`), and each row's `Generation` as
it finishes, read by the backend's own `Decoder.finish` (backends/decoding/decoder.py), as
the stock path's are, so both answer in one form.

A batch that runs on one merged adapter (or the base) takes a request for another resident
adapter too: it moves into a mixed state (stacked adapters, each row's own selected per row)
between two steps, its rows keeping the adapter they had. Without that move a lone request
would keep every request for another adapter waiting until it ends (seconds), which is what
Poisson arrivals over several adapters measured (bench/arrivals.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mondrian.backends.protocol import Admit, Generation, GenerationRequest
from mondrian.backends.transformers.engine.lora_bank import LoraBank
from mondrian.backends.transformers.engine.prefill import Prefiller
from mondrian.backends.transformers.engine.prepare import Prepared, Preparer
from mondrian.backends.transformers.engine.state import State, padded_rows

# grow(state, rows, length, t, mixed): the batch on `state` moved into one of `rows` rows
# and `length` positions between steps t and t+1, into the mixed (stacked-adapter) mode
# when `mixed` (fast_path.py: state.carry_over, graphs, the bank's merge undone).
Grow = Callable[[State, int, int, int, bool], State]

if TYPE_CHECKING:
    from mondrian.backends.transformers.backend import TransformersBackend


@dataclass
class Row:
    """One request in a running batch."""

    index: int  # its place among the call's requests; admitted ones follow
    request: GenerationRequest
    prepared: Prepared
    limit: int
    matcher: Any
    start_step: int  # the step that selects its first token
    started: float
    prefilled: float
    tokens: list[int] = field(default_factory=list)
    done: bool = False


class Scheduler:
    """The rows of the batch running on `st`; `finished(row, generation)` hears of each
    row as it ends."""

    def __init__(
        self,
        st: State,
        rows: list[Row | None],
        *,
        backend: TransformersBackend,
        bank: LoraBank | None,
        preparer: Preparer,
        prefiller: Prefiller,
        admit: Admit | None,
        finished: Callable[[Row, Generation], None],
        grow: Grow | None = None,
        max_rows: int = 0,
    ) -> None:
        self.st = st
        self.rows = rows
        self.backend = backend
        self.bank = bank
        self.preparer = preparer
        self.prefiller = prefiller
        self.admit = admit
        self.finished = finished
        self.grow = grow
        self.max_rows = max_rows  # live rows a growing batch may reach
        self.device = st.tok.device
        self.next_index = sum(r is not None for r in rows)
        # The rows still generating, by their place in the state: finish() drops the ones
        # that end, take_in() adds the ones it admits.
        self.live = {i: r for i, r in enumerate(rows) if r is not None and not r.done}

    def free_rows(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r is None or r.done]

    def finish(self, i: int) -> None:
        """Row i has its last token: out of the batch, its Generation delivered."""
        row = self.live.pop(i)
        row.done = True
        self.finished(row, self.generation(i, row))

    def generation(self, i: int, row: Row) -> Generation:
        """The Generation of a row that just finished, from host copies (no GPU wait)."""
        st = self.st
        count = len(row.tokens)
        steps = [(row.start_step + k) % st.ring for k in range(max(count, 1))]
        probes = st.host_probes[steps, i].float()
        now = time.perf_counter()
        generation = self.backend.decoder.finish(
            row.request,
            row.tokens[: row.limit],
            probes,
            prompt_tokens=row.prepared.length,
            elapsed=now - row.started,
        )
        generation.engine = "fast"
        decode_s = max(now - row.prefilled, 1e-9)
        generation.timings.update(
            {
                "prefill_s": round(row.prefilled - row.started, 4),
                "decode_s": round(decode_s, 4),
                "decode_tokens_per_s": round(count / decode_s, 2),
            }
        )
        return generation

    # --- admission -----------------------------------------------------------------------

    def room(self, free: list[int]) -> int:
        """How many requests may join now: the free rows, or up to `max_rows` live rows
        when the batch can grow."""
        if self.grow is None:
            return len(free)
        return max(len(free), self.max_rows - len(self.live))

    def take_in(self, t: int) -> None:
        """Between steps t and t+1: offer the room to `admit`, move to a bigger state when
        those taken need it, prefill them (the others wait one step); their first token is
        selected at step t+1."""
        free = self.free_rows()
        room = self.room(free)
        if self.admit is None or room <= 0:
            return
        offered: dict[int, Prepared] = {}

        def take(request: GenerationRequest) -> bool:
            prepared = self.admissible(request)
            if prepared is not None:
                offered[id(request)] = prepared
            return prepared is not None

        taken = self.admit(room, take)
        if not taken:
            return
        prepared = [offered[id(r)] for r in taken]
        decoder = self.backend.decoder
        needed = max(p.length + decoder.limit(r) + 1 for p, r in zip(prepared, taken, strict=True))
        mixing = not self.st.mixed and any(r.adapter != self.hot for r in taken)
        if len(taken) > len(free) or needed > self.st.length or mixing:
            self.resize(len(taken) - len(free), needed, t, mixing)
            free = self.free_rows()
        st = self.st
        at = free[: len(taken)]
        slots = [self.slot(r) for r in taken]
        began = time.perf_counter()
        if st.mixed and st.rowscale is not None and self.bank is not None:
            index = torch.tensor(at, device=self.device)
            st.rowscale.index_copy_(0, index, self.bank.rowscale(slots, self.device))
        self.prefiller.prefill(st, at, prepared, slots, self.bank)
        now = time.perf_counter()
        for i, request, p in zip(at, taken, prepared, strict=True):
            limit = decoder.limit(request)
            matcher = decoder.grammar.matcher() if request.constrained else None
            row = Row(self.next_index, request, p, limit, matcher, t + 1, began, now)
            self.rows[i] = self.live[i] = row
            self.next_index += 1

    def resize(self, extra: int, needed: int, t: int, mixed: bool = False) -> None:
        """Into a state of `extra` more rows (rounded up to a captured size) with room for
        `needed` positions, mixed when `mixed`; the rows keep their places."""
        if self.grow is None:
            raise RuntimeError("this batch cannot grow")
        rows = padded_rows(self.st.rows + max(0, extra))
        self.st = self.grow(self.st, rows, max(needed, self.st.length), t, mixed)
        self.rows += [None] * (self.st.rows - len(self.rows))

    @property
    def hot(self) -> str | None:
        """The adapter merged into the working weights (None: the base model)."""
        return self.bank.hot if self.bank is not None else None

    def resident(self, adapter: str | None) -> bool:
        """Whether a mixed state can serve `adapter`: the base, or one in the bank."""
        return adapter is None or (self.bank is not None and adapter in self.bank.names)

    def admissible(self, request: GenerationRequest) -> Prepared | None:
        """The request prepared, if it can join this batch: its adapter is the merged one,
        or resident in the bank when the batch is mixed or can move into the mixed mode,
        and it fits in the cache (or the batch can grow into a longer one)."""
        st = self.st
        if st.mixed or self.grow is not None:
            if not self.resident(request.adapter):
                return None
        elif request.adapter != self.hot:
            return None
        prepared = self.preparer.prepare(request)
        limit = self.backend.decoder.limit(request)
        fits = self.grow is not None or prepared.length + limit + 1 <= st.length
        return prepared if fits else None

    def slot(self, request: GenerationRequest) -> int | None:
        if self.st.mixed and request.adapter is not None and self.bank is not None:
            return self.bank.slot_of(request.adapter)
        return None

    def park_free_rows(self) -> None:
        """A free row decodes junk at its own position, one further each step: put it back
        to 0 now and then so that it never runs past the cache."""
        free = self.free_rows()
        if free:
            index = torch.tensor(free, device=self.device)
            self.st.cache_pos.index_fill_(0, index, 0)
            self.st.rope_pos.index_fill_(0, index, 0)
