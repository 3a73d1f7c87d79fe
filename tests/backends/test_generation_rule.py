"""One generation rule on every path (docs/generation.md): critiques are greedy and
constrained, calibration reads the model's own logits, and the checkpoint's
generation_config.json (sampling, repetition penalty) changes nothing — on the stock
path, the fast path and MLX alike."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mondrian.advisors import shipped_advisors
from mondrian.backends.protocol import GenerationRequest
from mondrian.prompts import critique_prompt

pytestmark = pytest.mark.model

TEXT_CHARS = 16
LIST_ITEMS = 1
SHORT = 48
PENALISED = {"do_sample": True, "repetition_penalty": 1.3, "temperature": 0.7, "top_k": 50}


def _requests() -> list[GenerationRequest]:
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (56, 64, 3), np.uint8))
    prompt = critique_prompt(shipped_advisors()[0], photo)
    return [
        GenerationRequest(prompt=prompt),
        GenerationRequest(prompt=prompt, constrained=False, max_new_tokens=SHORT),
    ]


def _backend(model_dir):
    from mondrian.backends.transformers.backend import TransformersBackend

    return TransformersBackend(
        str(model_dir), device="cpu", max_text_chars=TEXT_CHARS, max_list_items=LIST_ITEMS
    )


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint_factory, tmp_path_factory):
    base = tiny_checkpoint_factory()
    penalised = tmp_path_factory.mktemp("penalised") / "model"
    shutil.copytree(base, penalised)
    config_file = penalised / "generation_config.json"
    config = json.loads(config_file.read_text())
    config.update(PENALISED)
    config_file.write_text(json.dumps(config))
    return base, penalised


@pytest.fixture(scope="module")
def reference(checkpoints):
    """The stock path's answers on the checkpoint without a penalty."""
    return _backend(checkpoints[0]).generate(_requests())


def _same(results, reference) -> None:
    for mine, theirs in zip(results, reference, strict=True):
        assert mine.text == theirs.text
        assert (mine.new_tokens, mine.stopped) == (theirs.new_tokens, theirs.stopped)
        assert mine.expected_scores == pytest.approx(theirs.expected_scores, abs=1e-3)


def test_the_penalty_would_change_the_tokens(checkpoints):
    """The control: transformers' own generate() honours the copied config's penalty."""
    import torch

    backend = _backend(checkpoints[1])
    request = _requests()[1]
    text = backend.processor.apply_chat_template(
        request.prompt.messages(), add_generation_prompt=True, tokenize=False
    )
    inputs = backend.processor(text=[text], images=request.prompt.images, return_tensors="pt")
    with torch.inference_mode():
        default = backend.base.generate(**inputs, max_new_tokens=SHORT, do_sample=False)
        plain = backend.base.generate(
            **inputs, max_new_tokens=SHORT, do_sample=False, repetition_penalty=1.0
        )
    assert not torch.equal(default, plain)


def test_the_stock_path_ignores_the_generation_config(checkpoints, reference):
    results = _backend(checkpoints[1]).generate(_requests())
    assert results[0].critique is not None and results[0].expected_scores
    _same(results, reference)


def test_the_fast_path_ignores_the_generation_config(checkpoints, reference):
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = _backend(checkpoints[1])
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    _same(fast.generate(_requests()), reference)


def test_mlx_ignores_the_generation_config(checkpoints, reference, tmp_path):
    pytest.importorskip("mlx_vlm")
    from mondrian.backends.mlx.backend import MLXBackend

    backend = MLXBackend(
        str(checkpoints[1]),
        cache_dir=tmp_path,
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    _same(backend.generate(_requests()), reference)
