"""The transformers backend on tiny random-weight checkpoints of the three architectures:
always-valid JSON under the grammar, calibrated scores, resident adapters."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from mondrian.advisors import shipped_advisors
from mondrian.errors import InvalidInput, NotFound
from mondrian.prompts import critique_prompt
from mondrian.runtime.protocol import GenerationRequest
from mondrian.runtime.tiny import ARCHES
from mondrian.schema import DIMENSIONS, Critique

pytestmark = pytest.mark.model

TEXT_CHARS = 24  # short strings keep a random model's answers short
LIST_ITEMS = 2


def _photos(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (48 + 8 * (i % 5), 64 + 4 * i, 3), dtype=np.uint8))
        for i in range(count)
    ]


def _requests(count: int, **kwargs) -> list[GenerationRequest]:
    advisors = shipped_advisors()
    return [
        GenerationRequest(prompt=critique_prompt(advisors[i % len(advisors)], photo), **kwargs)
        for i, photo in enumerate(_photos(count))
    ]


@pytest.fixture(scope="module", params=ARCHES)
def backend(request, tiny_checkpoint_factory):
    from mondrian.runtime.transformers_backend import TransformersBackend

    return TransformersBackend(
        str(tiny_checkpoint_factory(request.param)),
        device="cpu",
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )


def test_twenty_of_twenty_constrained_critiques_are_valid(backend):
    results = backend.generate(_requests(20))
    assert len(results) == 20
    for result in results:
        assert result.critique is not None, result.error
        assert Critique.model_validate(json.loads(result.text))
        assert result.stopped, "ended by the token limit, not end-of-turn"
        assert result.new_tokens <= backend.answer_budget
        assert "<|" not in result.text


def test_the_same_prompts_unconstrained_fail(backend):
    results = backend.generate(_requests(3, constrained=False, max_new_tokens=80))
    assert all(result.critique is None for result in results)
    assert all(result.error for result in results)


def test_expected_scores_follow_the_score_token_probabilities(backend):
    (result,) = backend.generate(_requests(1))
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
    (result,) = backend.generate(_requests(1), on_token=lambda row, step: seen.append((row, step)))
    assert {row for row, _ in seen} == {0}
    assert len(seen) >= result.new_tokens - 1


def test_info_describes_the_model(backend):
    info = backend.info()
    assert info["backend"] == "transformers" and info["device"] == "cpu"
    assert info["dtype"] == "float32" and len(info["fingerprint"]) == 16


# --- adapters: on one architecture, the default one ---------------------------------------


@pytest.fixture(scope="module")
def adapter_setup(tiny_checkpoint_factory, tmp_path_factory, random_adapter_factory):
    from mondrian.runtime.transformers_backend import TransformersBackend

    base_dir = tiny_checkpoint_factory()
    backend = TransformersBackend(
        str(base_dir), device="cpu", max_text_chars=TEXT_CHARS, max_list_items=LIST_ITEMS
    )
    root = tmp_path_factory.mktemp("adapters")
    for name, seed in (("ansel@v1", 1), ("fan_ho@v1", 2)):
        random_adapter_factory(base_dir, root / name, seed, backend.fingerprint)
    return backend, root


def _answer(backend, adapter=None) -> str:
    (request,) = _requests(1, adapter=adapter)
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
    (request,) = _requests(1)
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

    from mondrian.runtime.fingerprint import model_fingerprint

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
