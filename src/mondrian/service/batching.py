"""Dynamic batching: the `generate` calls of many threads become one backend batch.

Why: the service runs several jobs at once (`ServiceOptions.concurrency`), and on a GPU a
decode step for 32 rows costs about twice one row's (bench/NOTES.md), so requests that
arrive together are generated together. One dispatcher thread owns the wrapped backend:
every call that touches the model (generation, adapters, embeddings) runs there, in arrival
order, so the backend never sees two threads.

A batch opens with the first waiting request and closes when `max_rows` rows wait, or
`max_wait_s` after it opened, or when the batch is complete: by default when no new request
arrived for `quiet_s`; with a `ready(waiting_calls)` hook (the service's: every running job
is waiting here and no upload is on its way) when that says so.
Requests that arrive while a batch runs go into the next one, unless the backend `admits`
them into the running batch (the transformers backend's fast path: continuous batching,
rows freed by finished requests are taken by waiting ones). If a batch fails, its
requests are retried one caller at a time, so that one caller's bad request (an adapter
not loaded, say) fails that caller alone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondrian.backends.protocol import (
    Backend,
    Generation,
    GenerationRequest,
    Joining,
    TokenCallback,
    deliver_each,
)

log = logging.getLogger(__name__)


@dataclass
class _Generate:
    requests: list[GenerationRequest]
    on_token: TokenCallback | None
    future: Future[list[Generation]] = field(default_factory=Future)
    error: BaseException | None = None  # raised by its own token callback


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


class _Abandoned(BaseException):
    """Every caller of a batch stopped listening (their callbacks raised): stop generating.
    A BaseException, like the service's shutdown signal, so no `except Exception` between
    here and the callback swallows it."""


_STOP = object()
READY_POLL_S = 0.002  # how often a `ready` hook is asked while a batch fills


class BatchingBackend:
    """A `Backend` that batches concurrent `generate` calls onto one wrapped backend."""

    def __init__(
        self,
        inner: Backend,
        *,
        max_rows: int = 32,
        max_wait_s: float = 0.05,
        quiet_s: float = 0.005,
        ready: Callable[[int], bool] | None = None,
        expected: Callable[[], int] | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.inner = inner
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.quiet_s = quiet_s
        self.ready = ready
        # How many calls are running or on their way (the service's jobs): a continuous
        # batch makes room for them, so they join it instead of waiting for it to end.
        self.expected = expected
        self.batches = 0  # batches run, and the rows in them: for tests and /metrics
        self.rows = 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held: Any = None  # an item taken while filling a batch that did not fit
        self._thread = threading.Thread(target=self._loop, name="mondrian-batcher", daemon=True)
        self._thread.start()

    # --- the Backend protocol ------------------------------------------------------------
    # Every member, spelled out: reads go straight to the wrapped backend, calls that touch
    # the model go through the dispatcher.

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model_id(self) -> str:
        return self.inner.model_id  # read each time: a merge renames the model

    @property
    def answer_budget(self) -> int:
        return self.inner.answer_budget

    @property
    def admits(self) -> bool:
        # Callers' requests join batches here, through the queue; whether the wrapped
        # backend admits decides how a batch runs (`_generate`), not what callers see.
        return False

    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        joining: Joining | None = None,
    ) -> list[Generation]:
        # Nothing joins a caller's call here (`admits` is False): its requests join a batch
        # through the queue instead, so `joining` only hears of the results.
        if not requests:
            return []
        if threading.current_thread() is self._thread:  # from inside a dispatched call
            return deliver_each(self.inner.generate(requests, on_token), joining)
        item = _Generate(list(requests), on_token)
        self._queue.put(item)
        return deliver_each(item.future.result(), joining)

    def embed_images(self, images: list[Any]) -> list[list[float]]:
        return self._call(lambda: self.inner.embed_images(images))

    def load_adapter(self, name: str, path: Path) -> None:
        self._call(lambda: self.inner.load_adapter(name, path))

    def unload_adapter(self, name: str) -> None:
        self._call(lambda: self.inner.unload_adapter(name))

    def merge_adapter(self, name: str) -> None:
        self._call(lambda: self.inner.merge_adapter(name))

    def adapters(self) -> list[str]:
        # A read of the wrapped backend's table: /health must not wait behind a batch.
        return self.inner.adapters()

    def info(self) -> dict[str, object]:
        return {**self.inner.info(), "batching_max_rows": self.max_rows}

    def warm_up(self) -> None:
        self._call(self.inner.warm_up)

    def queued(self) -> int:
        """Calls waiting for the dispatcher (not those in the running batch)."""
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the dispatcher after what is queued; later calls would wait forever."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # --- the dispatcher ------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return fn()
        item = _Call(fn)
        self._queue.put(item)
        return item.future.result()

    def _next(self, timeout: float | None) -> Any:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        return self._queue.get(timeout=timeout) if timeout is not None else self._queue.get()

    def _loop(self) -> None:
        while True:
            item = self._next(None)
            if item is _STOP:
                return
            if isinstance(item, _Call):
                _settle(item.future, item.fn)
                continue
            self._run(self._fill([item]))

    def _fill(self, batch: list[_Generate]) -> list[_Generate]:
        """Add waiting requests to a batch until it is full, quiet, or old enough."""
        rows = len(batch[0].requests)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows:
            left = deadline - time.monotonic()
            if left <= 0 or (self.ready is not None and self.ready(len(batch))):
                break
            try:
                item = self._next(min(READY_POLL_S if self.ready else self.quiet_s, left))
            except queue.Empty:
                if self.ready is None:
                    break
                continue
            if not isinstance(item, _Generate) or rows + len(item.requests) > self.max_rows:
                self._held = item  # adapter calls and STOP keep their place in line
                break
            batch.append(item)
            rows += len(item.requests)
        return batch

    def _run(self, batch: list[_Generate]) -> None:
        """Generate a batch and settle each caller's future (`batch` grows by the calls a
        continuous batch takes in)."""
        try:
            self._generate(batch)
        except _Abandoned:
            pass
        except Exception as exc:
            pending = [item for item in batch if not item.future.done()]
            if len(pending) > 1:
                log.warning(
                    "a batch of %d calls failed (%s); retrying each alone", len(pending), exc
                )
                for item in pending:
                    item.error = None
                    self._run([item])
                return
            for item in pending:
                item.future.set_exception(exc)
            return
        except BaseException as exc:  # the dispatcher must outlive it
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(item.error or exc)
            return
        for item in batch:
            if not item.future.done():
                item.future.set_exception(
                    item.error or RuntimeError("the model gave no answer for this request")
                )

    def _generate(self, batch: list[_Generate]) -> None:
        owners = [(item, j) for item in batch for j in range(len(item.requests))]
        answers: dict[int, list[Generation | None]] = {
            id(item): [None] * len(item.requests) for item in batch
        }

        def deliver(index: int, generation: Generation) -> None:
            item, j = owners[index]
            got = answers[id(item)]
            got[j] = generation
            if all(g is not None for g in got) and not item.future.done():
                if item.error is not None:
                    item.future.set_exception(item.error)
                else:
                    item.future.set_result(got)  # type: ignore[arg-type]

        def on_token(index: int, count: int) -> None:
            item, j = owners[index]
            if item.on_token is None or item.error is not None:
                return
            try:
                item.on_token(j, count)
            except BaseException as exc:  # handed to its own caller
                item.error = exc
                if all(i.error is not None for i in batch):
                    raise _Abandoned from None

        def admit(free: int, take: Callable[[GenerationRequest], bool]) -> list[GenerationRequest]:
            # Continuous batching: waiting calls join the running batch, in order, while
            # they fit; the first that does not (or an adapter call) keeps its place.
            taken: list[GenerationRequest] = []
            while True:
                try:
                    item = self._next(0)
                except queue.Empty:
                    break
                if (
                    not isinstance(item, _Generate)
                    or len(taken) + len(item.requests) > free
                    or not all(take(r) for r in item.requests)
                ):
                    self._held = item
                    break
                batch.append(item)
                owners.extend((item, j) for j in range(len(item.requests)))
                answers[id(item)] = [None] * len(item.requests)
                taken.extend(item.requests)
            self.rows += len(taken)
            return taken

        requests = [r for item in batch for r in item.requests]
        self.batches += 1
        self.rows += len(requests)
        if self.inner.admits:
            room = min(self.max_rows, max(len(requests), self.expected() if self.expected else 0))
            self.inner.generate(requests, on_token, joining=Joining(admit, deliver, room))
            return
        callbacks = any(item.on_token is not None for item in batch)
        for index, generation in enumerate(
            self.inner.generate(requests, on_token if callbacks else None)
        ):
            deliver(index, generation)


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to the caller
        future.set_exception(exc)
