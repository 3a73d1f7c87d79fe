"""The decode loop of a running batch, greedy, with the grammar one step behind the GPU:
while step t+1's forward runs, the CPU accepts token t into each row's matcher and fills
the bitmask for step t+1; the GPU only waits for the CPU if the mask takes longer than a
forward. Rows join and finish between steps (scheduler.py)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from mondrian.backends.protocol import TokenCallback
from mondrian.backends.transformers.engine.lora_bank import LoraBank
from mondrian.backends.transformers.engine.scheduler import Scheduler
from mondrian.backends.transformers.engine.state import BUCKET, State, round_up
from mondrian.backends.transformers.engine.step import StepRunner

PARK_STEPS = 64  # with admission, free rows' positions go back to 0 this often


class BatchMatcher:
    """xgrammar's batch matcher (rows' bitmasks filled on the CPU's threads), made once."""

    def __init__(self) -> None:
        self._matcher: Any = None

    def get(self) -> Any:
        if self._matcher is None:
            import xgrammar as xgr

            self._matcher = xgr.BatchGrammarMatcher(max_threads=os.cpu_count() or 1)
        return self._matcher


class DecodeLoop:
    """One call's decode: steps until every row (admitted ones too) has finished."""

    def __init__(
        self,
        scheduler: Scheduler,
        runner: StepRunner,
        batch_matcher: BatchMatcher,
        *,
        bank: LoraBank | None,
        stop_token_ids: list[int],
        on_token: TokenCallback | None,
        ignore_stop: bool,
    ) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.batch_matcher = batch_matcher
        self.bank = bank
        self.stops = set(stop_token_ids)
        self.on_token = on_token
        self.ignore_stop = ignore_stop
        self.overlap = runner.cuda_graphs
        self.masked = True  # whether the device mask may hold a row's constraint
        self.stats = {"steps": 0, "fill_s": 0.0, "fill_max_s": 0.0, "wait_s": 0.0}

    @property
    def st(self) -> State:
        """The batch's state: the scheduler's, which a growing batch replaces between steps."""
        return self.scheduler.st

    def run(self) -> dict[str, float]:
        """Decode to the end; returns the loop's stats (steps, grammar CPU time, waits)."""
        scheduler, admit = self.scheduler, self.scheduler.admit
        self.st.mask.fill_(-1)
        self.masked = False
        self.fill_mask()
        self.runner.select(self.st, 0)
        t = 0
        while True:
            live = scheduler.live
            more = any(len(r.tokens) + 1 < r.limit for r in live.values())
            bucket = self.bucket_for(t) if more else 0
            if more and self.overlap:
                self.forward(bucket)  # queued behind select(t): the GPU starts at once
            self.accept(t)
            if more and not self.overlap and scheduler.live:
                self.forward(bucket)
            if admit is not None:
                if t % PARK_STEPS == 0:
                    scheduler.park_free_rows()
                scheduler.take_in(t)
            if not scheduler.live:
                break
            self.fill_mask()  # on the CPU, while the GPU runs forward(t)
            self.runner.select(self.st, t + 1)
            t += 1
        if self.overlap:
            torch.cuda.synchronize()
        return self.stats

    def fill_mask(self) -> None:
        """The grammar bitmask of the next selection, for every constrained live row."""
        st, stats = self.st, self.stats
        active = {
            i: r.matcher
            for i, r in self.scheduler.live.items()
            if r.matcher is not None and not r.matcher.is_terminated()
        }
        if not active and not self.masked:
            return  # all ones already: nothing to fill or copy
        self.masked = bool(active)
        began = time.perf_counter()
        st.mask_host.fill_(-1)
        if len(active) == 1:
            ((i, matcher),) = active.items()
            matcher.fill_next_token_bitmask(st.mask_host, i)
        elif active:  # rows in parallel on the CPU's threads
            self.batch_matcher.get().batch_fill_next_token_bitmask(
                list(active.values()), st.mask_host, list(active)
            )
        st.mask.copy_(st.mask_host, non_blocking=True)
        spent = time.perf_counter() - began
        stats["fill_s"] += spent
        stats["fill_max_s"] = max(stats["fill_max_s"], spent)

    def bucket_for(self, t: int) -> int:
        # The forward that turns token t into the logits of token t+1 writes each live
        # row's cache position (its prompt length + the tokens it has by then).
        live = self.scheduler.live
        ahead = max(r.prepared.length + t - r.start_step for r in live.values())
        return round_up(ahead + 1, BUCKET)

    def forward(self, bucket: int) -> None:
        self.runner.forward(self.st, bucket, self.bank)

    def accept(self, t: int) -> None:
        """Step t's tokens into their rows (and matchers); rows that end are finished."""
        stats, scheduler = self.stats, self.scheduler
        stats["steps"] += 1
        if self.runner.cuda_graphs:
            began = time.perf_counter()
            self.runner.wait_for_select()
            stats["wait_s"] += time.perf_counter() - began
        chosen = self.st.host_tokens[t % self.st.ring].tolist()
        for i, row in list(scheduler.live.items()):
            token = chosen[i]
            row.tokens.append(token)
            matcher = row.matcher
            if matcher is not None and not matcher.is_terminated():
                if not matcher.accept_token(token):
                    raise RuntimeError(f"grammar rejected token {token} in row {i}")
                if self.ignore_stop and matcher.is_terminated():
                    matcher.reset()
            if self.on_token is not None:
                self.on_token(row.index, len(row.tokens))
            stopped = token in self.stops and not self.ignore_stop
            if stopped or len(row.tokens) >= row.limit:
                scheduler.finish(i)
