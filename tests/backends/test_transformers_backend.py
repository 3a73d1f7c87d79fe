"""The transformers backend on tiny random-weight checkpoints of the three architectures,
and of the default one on Qwen's real vocabulary: always-valid JSON under the grammar,
calibrated scores, resident adapters."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from backend_helpers import (
    assert_plain_tokens_then_a_stop,
    assert_text_is_the_critique,
    critique_requests,
)

from mondrian.backends.protocol import GenerationRequest
from mondrian.errors import InvalidInput, NotFound
from mondrian.schema import DIMENSIONS
from mondrian.tiny.families import ARCHES, DEFAULT_ARCH

pytestmark = pytest.mark.model

TEXT_CHARS = 24  # short strings keep a random model's answers short
LIST_ITEMS = 2
# The real vocabulary runs on the default architecture only: its grammar mask spans
# 151,936 ids, about 2 s per constrained critique on two cores, against 0.2 s.
CASES = [*((arch, "tiny") for arch in ARCHES), (DEFAULT_ARCH, "real")]
# Requests per case: the README's "20 of 20" on the tiny vocabulary; 4 on the real one.
CONSTRAINED = {"tiny": 20, "real": 4}
# Unconstrained requests (tiny vocabulary), each given the whole answer budget: 20 on the
# default architecture (the README's claim), 4 on the others.
UNCONSTRAINED = {DEFAULT_ARCH: 20}
SMALL_PIXELS = 64 * 28 * 28  # the real processor's own budget would allow 16k image tokens


@pytest.fixture(scope="module")
def backend_for(tiny_checkpoint_factory) -> Callable:
    """`backend_for(arch, vocab)`: one backend per case for the whole module."""
    from mondrian.backends.transformers.backend import TransformersBackend

    built: dict[tuple[str, str], TransformersBackend] = {}

    def get(arch: str, vocab: str) -> TransformersBackend:
        if (arch, vocab) not in built:
            built[arch, vocab] = TransformersBackend(
                str(tiny_checkpoint_factory(arch, vocab=vocab)),
                device="cpu",
                max_pixels=SMALL_PIXELS,
                max_text_chars=TEXT_CHARS,
                max_list_items=LIST_ITEMS,
            )
        return built[arch, vocab]

    return get


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(case))
def case(request) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def backend(case, backend_for):
    return backend_for(*case)


@pytest.fixture(scope="module", params=ARCHES)
def tiny_arch(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tiny_backend(tiny_arch, backend_for):
    """The tiny vocabulary only: score calibration on the real one is tested in
    test_calibration.py, and a full-budget unconstrained batch over the real vocabulary
    took minutes on two loaded cores."""
    return backend_for(tiny_arch, "tiny")


def test_constrained_critiques_are_valid_and_end_at_a_stop_token(backend, case, generated_ids):
    count = CONSTRAINED[case[1]]
    results = backend.generate(critique_requests(count))
    assert len(results) == len(generated_ids) == count
    for result, ids in zip(results, generated_ids, strict=True):
        assert result.critique is not None, result.error
        assert_text_is_the_critique(result.text, result.critique, TEXT_CHARS, LIST_ITEMS)
        assert result.stopped, "ended by the token limit, not end-of-turn"
        assert result.new_tokens <= backend.answer_budget
        assert_plain_tokens_then_a_stop(backend.tokenizer, backend.decoder.stop_token_ids, ids)


def test_the_same_prompts_unconstrained_fail_with_a_budget_that_fits_an_answer(
    tiny_backend, tiny_arch
):
    # Unconstrained generation gets as many tokens as the longest valid answer takes, so
    # failing is the model's doing, not a cut-off one.
    count = UNCONSTRAINED.get(tiny_arch, 4)
    budget = tiny_backend.answer_budget
    results = tiny_backend.generate(
        critique_requests(count, constrained=False, max_new_tokens=budget)
    )
    assert len(results) == count
    for result in results:
        assert result.critique is None and result.error, result.text
        assert result.new_tokens <= budget


def test_expected_scores_follow_the_score_token_probabilities(tiny_backend):
    (result,) = tiny_backend.generate(critique_requests(1))
    critique = result.critique
    assert critique is not None
    assert set(result.score_distributions) == set(DIMENSIONS)
    for key, dim in critique.dimensions.items():
        dist = result.score_distributions[key]
        assert sum(dist) == pytest.approx(1.0)
        assert 0.0 <= dim.expected_score <= 10.0
        assert dim.expected_score == pytest.approx(sum(i * p for i, p in enumerate(dist)), abs=1e-3)
        # Greedy decoding wrote the most probable digit (10 and 1 share the digit "1").
        written = "1" if dim.score == 10 else str(dim.score)
        digit_probs = [*dist[:10]]
        digit_probs[1] += dist[10]
        assert str(int(np.argmax(digit_probs))) == written


def test_tokens_stream_to_the_callback(backend):
    seen: list[tuple[int, int]] = []
    (result,) = backend.generate(
        critique_requests(1), on_token=lambda row, step: seen.append((row, step))
    )
    assert {row for row, _ in seen} == {0}
    assert len(seen) >= result.new_tokens - 1


def test_info_describes_the_model(backend):
    info = backend.info()
    assert info["backend"] == "transformers" and info["device"] == "cpu"
    assert info["dtype"] == "float32" and len(info["fingerprint"]) == 16
    assert info["engine"] == "stock"  # `--fast auto` on a machine without CUDA


# --- adapters: on one architecture, the default one ---------------------------------------


@pytest.fixture(scope="module")
def adapter_setup(tiny_checkpoint_factory, tmp_path_factory, random_adapter_factory):
    from mondrian.backends.transformers.backend import TransformersBackend

    base_dir = tiny_checkpoint_factory()
    backend = TransformersBackend(
        str(base_dir), device="cpu", max_text_chars=TEXT_CHARS, max_list_items=LIST_ITEMS
    )
    root = tmp_path_factory.mktemp("adapters")
    for name, seed in (("ansel@v1", 1), ("fan_ho@v1", 2)):
        random_adapter_factory(base_dir, root / name, seed, backend.fingerprint)
    return backend, root


def _answer(backend, adapter=None) -> str:
    (request,) = critique_requests(1, adapter=adapter)
    (result,) = backend.generate([request])
    assert result.critique is not None and result.adapter == adapter
    return result.text


def test_adapters_stay_resident_and_switch_per_request(adapter_setup):
    backend, root = adapter_setup
    before = _answer(backend)
    backend.load_adapter("ansel@v1", root / "ansel@v1")
    backend.load_adapter("fan_ho@v1", root / "fan_ho@v1")
    assert backend.adapters() == ["ansel@v1", "fan_ho@v1"]
    first_a, b = _answer(backend, "ansel@v1"), _answer(backend, "fan_ho@v1")
    assert len({before, first_a, b}) == 3, "each adapter must change the answer"
    assert _answer(backend, "ansel@v1") == first_a, "switching back gives the same answer"
    assert _answer(backend) == before, "no adapter is the untouched base model"

    started = time.perf_counter()
    for _ in range(20):
        backend.model.set_adapter("ansel@v1")
        backend.model.set_adapter("fan_ho@v1")
    assert (time.perf_counter() - started) / 40 < 0.05


def test_a_mixed_batch_equals_the_single_requests(adapter_setup):
    backend, root = adapter_setup
    for name in ("ansel@v1", "fan_ho@v1"):
        backend.load_adapter(name, root / name)
    adapters = ["ansel@v1", None, "fan_ho@v1"]
    singles = [_answer(backend, name) for name in adapters]
    (request,) = critique_requests(1)
    mixed = backend.generate(
        [GenerationRequest(prompt=request.prompt, adapter=name) for name in adapters]
    )
    assert [r.text for r in mixed] == singles


def test_an_unknown_adapter_is_refused(adapter_setup):
    backend, _ = adapter_setup
    with pytest.raises(NotFound):
        _answer(backend, "nobody@v9")


def test_an_adapter_from_another_base_is_refused(
    adapter_setup, tiny_checkpoint_factory, random_adapter_factory
):
    backend, root = adapter_setup
    other_base = tiny_checkpoint_factory(seed=1)
    from transformers import AutoModelForImageTextToText

    from mondrian.backends.decoding.fingerprint import model_fingerprint

    other = model_fingerprint(AutoModelForImageTextToText.from_pretrained(other_base))
    assert other != backend.fingerprint
    random_adapter_factory(other_base, root / "foreign@v1", 3, other)
    with pytest.raises(InvalidInput) as info:
        backend.load_adapter("foreign@v1", root / "foreign@v1")
    assert str(other_base) in info.value.message and backend.model_id in info.value.message
    assert "foreign@v1" not in backend.adapters()


def test_only_safetensors_adapters_load(adapter_setup):
    backend, root = adapter_setup
    pickled = root / "pickled@v1"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(
        (root / "ansel@v1" / "adapter_config.json").read_text()
    )
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InvalidInput, match="safetensors"):
        backend.load_adapter("pickled@v1", pickled)
