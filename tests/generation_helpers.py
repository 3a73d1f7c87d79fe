"""Requests, adapters and checks that the fast path's tests share: the CPU ones
(tests/backends/test_fast_path.py) and the CUDA ones (tests/gpu/test_fast_path_cuda.py).

At tests/ level, beside tests/conftest.py, so that either folder imports it by name
(pytest puts a conftest's folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mondrian.advisors import shipped_advisors
from mondrian.backends.protocol import Generation, GenerationRequest
from mondrian.prompts import critique_prompt


def random_photo(seed: int) -> Image.Image:
    """Noise of a size that depends on the seed: prompts of different lengths."""
    rng = np.random.default_rng(seed)
    size = (48 + 8 * seed, 64 + 4 * seed, 3)
    return Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))


def critique_request(index: int, **kwargs) -> GenerationRequest:
    """A critique request of the index-th shipped advisor (in turn) on `random_photo(index)`."""
    advisors = shipped_advisors()
    prompt = critique_prompt(advisors[index % len(advisors)], random_photo(index))
    return GenerationRequest(prompt=prompt, **kwargs)


def make_lora(base_dir: Path, out_dir: Path, seed: int) -> None:
    """A random LoRA on every language-model linear, rank 4 or 8 by the seed's parity (two
    ranks: the fast path's bank pads the smaller one), B large enough to change answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    config = LoraConfig(
        r=4 + 4 * (seed % 2),
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(out_dir, safe_serialization=True)


def same_as_stock(
    backend, fast, requests: list[GenerationRequest], score_tolerance: float = 1e-4
) -> list[Generation]:
    """The fast path's generations of `requests`, checked against the stock path's: the same
    text, token counts, stop and prompt length, and expected scores within the tolerance."""
    stock = backend.generate(requests)
    quick = fast.generate(requests)
    for row, (s, q) in enumerate(zip(stock, quick, strict=True)):
        assert q.text == s.text, f"row {row}: fast {q.text!r} != stock {s.text!r}"
        assert q.new_tokens == s.new_tokens and q.stopped == s.stopped, f"row {row}"
        assert (s.engine, q.engine) == ("stock", "fast"), f"row {row}: which path served"
        assert q.prompt_tokens == s.prompt_tokens, f"row {row}"
        expected = pytest.approx(s.expected_scores, abs=score_tolerance)
        assert q.expected_scores == expected, f"row {row}"
    return quick
