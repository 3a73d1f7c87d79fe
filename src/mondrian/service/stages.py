"""What a running job is doing now, finer than its row's `phase`: the stage a photographer
reads in the studio and an app reads in `GET /jobs/{id}/events`.

    queued (its position) -> profiling -> retrieving -> critiquing (tokens so far) -> done

- `profiling`: the photo read and its facts measured (analysis.py), then for rag the
  neutral first reading of the photo, the pass 1 of strategies/rag.py;
- `retrieving`: rag between its two passes: the photo's embedding, the portfolio's
  exemplars ranked, the critique prompt built;
- `critiquing`: the critique pass, with the tokens written so far.

The job row keeps `status`, `phase` and `progress` (storage/jobs.py; the API's `phase` keeps
its names: queued, preparing, generating, done, failed); stages live in memory only, in the
process that runs the job (`LiveStages`), so a stream reading a job another process runs
falls back to `stage_of_phase`. A job's stages are learned from its calls to the backend
(`StageBackend`, one per job, wrapping the worker's): a generate call starting, ending, and
its tokens. Which call is which follows the strategy that will serve (`passes_for`, the same
fallback analysis.py walks).
"""

from __future__ import annotations

import dataclasses
import threading

from mondrian.backends.protocol import (
    Backend,
    Forwarding,
    Generation,
    GenerationRequest,
    Joining,
    TokenCallback,
)
from mondrian.context import Context
from mondrian.errors import MondrianError
from mondrian.modes import Mode
from mondrian.storage import advisors
from mondrian.storage.jobs import Job
from mondrian.strategies.registry import STRATEGIES, Fallback

STAGES: tuple[str, ...] = ("queued", "profiling", "retrieving", "critiquing", "done", "failed")
# The row's phase -> the stage shown where the running process's stages cannot be read.
_OF_PHASE = {"preparing": "profiling", "generating": "critiquing"}
# The stage of each generate call, per strategy: rag profiles, then critiques.
_PASSES: dict[str, tuple[str, ...]] = {Mode.RAG: ("profiling", "critiquing")}
_ONE_PASS = ("critiquing",)


def stage_of_phase(phase: str) -> str:
    return _OF_PHASE.get(phase, phase)


def passes_for(ctx: Context, job: Job) -> tuple[str, ...]:
    """The stage of each generate call the job will make, by the strategy that will serve
    it (strategies/registry.py's fallback, with the job's variant as analysis.py sets it)."""
    try:
        with ctx.db.read() as conn:
            advisor = advisors.require_advisor(conn, job.advisor_id)
        job_ctx = dataclasses.replace(ctx, variant=job.variant)
        strategy, _ = Fallback(STRATEGIES).choose(job_ctx, advisor, job.mode_requested)
    except MondrianError:
        return _ONE_PASS  # the job will fail as it runs; its error says why
    return _PASSES.get(strategy.name, _ONE_PASS)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    tokens: int = 0  # of the stage's generate call so far


class LiveStages:
    """The stage of each job this process runs; thread-safe (worker threads write, the
    event streams read)."""

    def __init__(self) -> None:
        self._now: dict[str, Stage] = {}
        self._lock = threading.Lock()

    def set(self, job_id: str, name: str, tokens: int = 0) -> None:
        with self._lock:
            self._now[job_id] = Stage(name, tokens)

    def tokens(self, job_id: str, count: int) -> None:
        with self._lock:
            stage = self._now.get(job_id)
            if stage is not None:
                self._now[job_id] = Stage(stage.name, count)

    def get(self, job_id: str) -> Stage | None:
        with self._lock:
            return self._now.get(job_id)

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._now.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._now)


class StageBackend(Forwarding):
    """The worker's backend for one job: every member passes through; `generate` also marks
    the job's stage as each planned pass starts and ends (module docstring)."""

    def __init__(self, inner: Backend, stages: LiveStages, job_id: str, passes: tuple[str, ...]):
        super().__init__(inner)
        self.stages = stages
        self.job_id = job_id
        self.passes = passes
        self.calls = 0

    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        joining: Joining | None = None,
    ) -> list[Generation]:
        index = min(self.calls, len(self.passes) - 1)
        self.calls += 1
        self.stages.set(self.job_id, self.passes[index])
        generations = self.inner.generate(requests, on_token, joining=joining)
        if self.calls < len(self.passes):  # a later pass follows: rag ranks its exemplars
            self.stages.set(self.job_id, "retrieving")
        return generations
