"""BatchingBackend: concurrent generate() calls become one batch on one thread, each caller
gets its own rows back, and one caller's failure stays its own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from backend_fakes import EchoBackend
from mondrian.advisors import shipped_advisors
from mondrian.backends.protocol import GenerationRequest, Joining
from mondrian.errors import NotFound, Unavailable
from mondrian.prompts import Prompt, critique_prompt
from mondrian.service.batching import BatchingBackend


def _request(text: str, adapter: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt=Prompt(system=text, user="u"), adapter=adapter)


def _blocked(max_rows: int = 8):
    """A batcher whose dispatcher is busy with one call held at the inner backend's gate:
    (gate, inner, batcher, pool, that first call's future)."""
    gate = threading.Event()
    inner = EchoBackend(gate)
    batcher = BatchingBackend(inner, max_rows=max_rows, max_wait_s=1.0)
    pool = ThreadPoolExecutor(8)
    first = pool.submit(batcher.generate, [_request("first")])
    assert inner.entered.wait(10)
    return gate, inner, batcher, pool, first


def _wait_queued(batcher: BatchingBackend, count: int) -> None:
    for _ in range(1000):
        if batcher.queued() >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} calls never queued")


def test_calls_waiting_together_run_as_one_batch_and_get_their_own_rows():
    gate, inner, batcher, pool, first = _blocked()
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    a = pool.submit(
        batcher.generate, [_request("a1"), _request("a2")], lambda r, c: seen["a"].append((r, c))
    )
    _wait_queued(batcher, 1)
    b = pool.submit(batcher.generate, [_request("b1")], lambda r, c: seen["b"].append((r, c)))
    _wait_queued(batcher, 2)
    gate.set()

    assert [g.text for g in first.result(10)] == ["first"]
    assert [g.text for g in a.result(10)] == ["a1", "a2"]
    assert [g.text for g in b.result(10)] == ["b1"]
    assert inner.batches == [["first"], ["a1", "a2", "b1"]]
    # Callbacks see their own row numbers, as if they had called alone.
    assert sorted(seen["a"]) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert sorted(seen["b"]) == [(0, 1), (0, 2)]
    assert inner.threads == {"mondrian-batcher"}
    assert (batcher.batches, batcher.rows) == (2, 4)
    batcher.close()


def test_a_batch_never_exceeds_max_rows():
    gate, inner, batcher, pool, _ = _blocked(max_rows=2)
    futures = []
    for name in "abc":
        futures.append(pool.submit(batcher.generate, [_request(name)]))
        _wait_queued(batcher, len(futures))
    gate.set()
    assert [f.result(10)[0].text for f in futures] == ["a", "b", "c"]
    assert inner.batches == [["first"], ["a", "b"], ["c"]]
    batcher.close()


def test_one_callers_bad_request_fails_that_caller_alone():
    gate, _, batcher, pool, _ = _blocked()
    good = pool.submit(batcher.generate, [_request("good")])
    _wait_queued(batcher, 1)
    bad = pool.submit(batcher.generate, [_request("bad", adapter="missing")])
    _wait_queued(batcher, 2)
    gate.set()
    assert good.result(10)[0].text == "good"
    with pytest.raises(NotFound, match="missing"):
        bad.result(10)
    batcher.close()


def test_a_callback_that_raises_stops_its_caller_not_the_batch():
    gate, _, batcher, pool, _ = _blocked()

    def quit_listening(row, count):
        raise KeyboardInterrupt  # a BaseException, like the service's shutdown signal

    quitter = pool.submit(batcher.generate, [_request("quitter")], quit_listening)
    _wait_queued(batcher, 1)
    stayer = pool.submit(batcher.generate, [_request("stayer")], lambda r, c: None)
    _wait_queued(batcher, 2)
    gate.set()
    assert stayer.result(10)[0].text == "stayer"
    with pytest.raises(KeyboardInterrupt):
        quitter.result(10)
    batcher.close()


def test_adapter_calls_run_on_the_dispatcher_in_order():
    inner = EchoBackend()
    batcher = BatchingBackend(inner)
    batcher.load_adapter("ansel@v1", "/nowhere")
    assert batcher.adapters() == ["ansel@v1"]
    assert inner.threads == {"mondrian-batcher"}
    assert batcher.answer_budget == 7 and batcher.model_id == "echo-model"
    assert batcher.info()["batching_max_rows"] == 32
    batcher.unload_adapter("ansel@v1")
    assert batcher.adapters() == []
    with pytest.raises(Unavailable, match="merge"):  # said by the wrapped backend
        batcher.merge_adapter("ansel@v1")
    batcher.close()


def test_a_caller_gets_each_generation_delivered_and_is_never_admitted_into():
    inner = EchoBackend()
    batcher = BatchingBackend(inner)
    delivered: dict[int, str] = {}
    offers: list[int] = []

    def admit(free, take):
        offers.append(free)
        return []

    got = batcher.generate(
        [_request("a"), _request("b")],
        joining=Joining(admit, lambda i, g: delivered.__setitem__(i, g.text)),
    )
    assert [g.text for g in got] == ["a", "b"] and delivered == {0: "a", 1: "b"}
    # Callers' calls join batches through the queue, not through an `admit` of theirs.
    assert not batcher.admits and offers == []
    batcher.close()


@pytest.mark.model
def test_batched_critiques_equal_the_ones_generated_alone(tiny_checkpoint_factory):
    from mondrian.backends.transformers.backend import TransformersBackend

    backend = TransformersBackend(
        str(tiny_checkpoint_factory()), device="cpu", max_text_chars=8, max_list_items=1
    )
    from PIL import Image

    photo = Image.new("RGB", (64, 48), (180, 90, 30))
    requests = [critique_prompt(advisor, photo) for advisor in shipped_advisors()[:3]]
    alone = [backend.generate([GenerationRequest(prompt=p)])[0].text for p in requests]

    batcher = BatchingBackend(backend, max_rows=8, max_wait_s=5.0, quiet_s=1.0)
    with ThreadPoolExecutor(3) as pool:
        together = list(
            pool.map(lambda p: batcher.generate([GenerationRequest(prompt=p)])[0].text, requests)
        )
    batcher.close()
    assert batcher.batches == 1, "the three concurrent calls should share one batch"
    assert together == alone


@pytest.mark.model
def test_a_call_arriving_mid_batch_joins_it_on_the_fast_path(tiny_checkpoint_factory):
    # Continuous batching through the batcher: a call of three requests runs in four rows;
    # a call that arrives while it decodes takes the free row instead of waiting for the
    # batch to end, and both get what they would have got alone.
    from PIL import Image

    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = TransformersBackend(
        str(tiny_checkpoint_factory()), device="cpu", max_text_chars=8, max_list_items=1
    )
    # The fast path is CUDA-only in service; on the CPU it runs its functions eagerly.
    backend.fast_path = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    assert backend.admits
    advisors = shipped_advisors()
    photo = Image.new("RGB", (64, 48), (90, 140, 200))
    first = [
        GenerationRequest(prompt=critique_prompt(a, photo), max_new_tokens=24) for a in advisors[:3]
    ]
    later = GenerationRequest(prompt=critique_prompt(advisors[3], photo), max_new_tokens=16)
    alone = [backend.generate([r])[0].text for r in (*first, later)]

    batcher = BatchingBackend(backend, max_rows=4, max_wait_s=0.0)
    pool = ThreadPoolExecutor(2)
    late: list = []

    def send_later(row: int, count: int) -> None:
        if row == 0 and count == 3 and not late:
            late.append(pool.submit(batcher.generate, [later]))
            _wait_queued(batcher, 1)  # in the queue before the next step's admission

    together = batcher.generate(first, send_later)
    assert [g.text for g in together] == alone[:3]
    assert late[0].result(30)[0].text == alone[3]
    assert batcher.batches == 1 and batcher.rows == 4
    batcher.close()
