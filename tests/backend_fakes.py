"""Every stand-in for a backend the tests use, in one place, so that
tests/backends/test_protocol.py holds each one to the full `Backend` Protocol: a fake that
lacked a member would test code against a contract the real backends do not have.

`EchoBackend` is no model (the batcher's plumbing tests); `ForwardingBackend` wraps a real
one and passes every member through, by name, for the wrappers that change one call.
"""

from __future__ import annotations

import threading
from typing import Any

from mondrian.backends.protocol import Backend, Forwarding, Generation, deliver_each
from mondrian.errors import NotFound, Unavailable


class EchoBackend:
    """Answers each request with its prompt's system text; records batches and their
    threads, and can hold a batch at a gate until the test opens it."""

    name = "echo"
    model_id = "echo-model"
    answer_budget = 7
    admits = False

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.gate = gate
        self.entered = threading.Event()
        self.loaded: list[str] = []
        self.warmed = 0  # warm_up calls

    def generate(self, requests, on_token=None, *, joining=None):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.threads.add(threading.current_thread().name)
        texts = [r.prompt.system for r in requests]
        if any(r.adapter == "missing" for r in requests):
            raise NotFound("adapter missing is not loaded")
        self.batches.append(texts)
        for count in (1, 2):
            for row in range(len(requests)):
                if on_token is not None:
                    on_token(row, count)
        return deliver_each([Generation(text=t, critique=None, error=None) for t in texts], joining)

    def embed_images(self, images):
        raise Unavailable("the echo backend makes no embeddings")

    def load_adapter(self, name, path):
        self.threads.add(threading.current_thread().name)
        self.loaded.append(name)

    def unload_adapter(self, name):
        if name not in self.loaded:
            raise NotFound(f"adapter {name} is not loaded")
        self.loaded.remove(name)

    def merge_adapter(self, name):
        raise Unavailable("the echo backend has no weights to merge an adapter into")

    def adapters(self):
        return list(self.loaded)

    def info(self):
        return {"backend": self.name}

    def warm_up(self):
        self.threads.add(threading.current_thread().name)
        self.warmed += 1


class ForwardingBackend(Forwarding):
    """A real backend with every Protocol member passed through (backends/protocol.py's
    `Forwarding`); subclasses change one."""


class GatedBackend(ForwardingBackend):
    """The real backend, except that generate() waits until the test opens the gate."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def generate(self, requests, on_token=None, *, joining=None):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.generate(requests, on_token, joining=joining)


class CrashingBackend(GatedBackend):
    """Raises a bug-like error from generate() once, then behaves."""

    def generate(self, requests, on_token=None, *, joining=None):
        if not self.entered.is_set():
            self.entered.set()
            raise RuntimeError("CUDA went sideways (secret detail)")
        return self.inner.generate(requests, on_token, joining=joining)


class RecordingBackend(GatedBackend):
    """The real backend; records each batch's size and holds the first until the gate opens."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []

    def generate(self, requests, on_token=None, *, joining=None):
        self.sizes.append(len(requests))
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.generate(requests, on_token, joining=joining)


class WarmingBackend(ForwardingBackend):
    """Says, in order, which of warm_up and generate ran, and on which thread."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.calls: list[tuple[str, str]] = []

    def warm_up(self):
        self.calls.append(("warm_up", threading.current_thread().name))
        super().warm_up()

    def generate(self, requests, on_token=None, *, joining=None):
        self.calls.append(("generate", threading.current_thread().name))
        return super().generate(requests, on_token, joining=joining)


class ScriptedBackend(ForwardingBackend):
    """The real model runs, but every critique it returns is `script()`'s, and the user
    prompts it was sent are kept: for tests of what happens after generation (checks)."""

    def __init__(self, inner: Backend, script) -> None:
        super().__init__(inner)
        self.script = script
        self.users: list[str] = []

    def generate(self, requests, on_token=None, *, joining=None):
        import dataclasses

        self.users.extend(r.prompt.user for r in requests)
        answers = self.inner.generate(requests, on_token, joining=joining)
        return [dataclasses.replace(g, critique=self.script(), error=None) for g in answers]


class SlowTokensBackend(ForwardingBackend):
    """The real backend, 10 ms slower per token, so a poll sees a generation under way."""

    def generate(self, requests, on_token=None, *, joining=None):
        import time

        def slow(row: int, count: int) -> None:
            time.sleep(0.01)
            if on_token is not None:
                on_token(row, count)

        return self.inner.generate(requests, slow, joining=joining)


class PeekingBackend(EchoBackend):
    """The echo backend, keeping what `peek()` returns as each generate call starts (the
    state a wrapper set up for the call, e.g. a job's stage)."""

    def __init__(self, peek) -> None:
        super().__init__()
        self.peek = peek
        self.peeked: list[Any] = []

    def generate(self, requests, on_token=None, *, joining=None):
        self.peeked.append(self.peek())
        return super().generate(requests, on_token, joining=joining)


class SleepyBackend(EchoBackend):
    """The echo backend, `seconds` slower per generate call and five tokens an answer:
    for code that times calls (bench/vllm_bench.py's budget), counting the calls."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.calls = seconds, 0

    def generate(self, requests, on_token=None, *, joining=None):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        answers = [Generation(text="x", critique=None, error=None, new_tokens=5) for _ in requests]
        return deliver_each(answers, joining)
