"""Calibrated scores on the real vocabulary (Qwen's BPE, where `,"` is one token after a
score digit): an adapter trained to write 1 reports ≈1.0 and one trained to write 10
reports ≈10.0 — the 10-vs-1 split counts every token the grammar allows after the "1".

The adapters are LoRAs fitted in a few dozen steps to one photo's critique whose scores
are all 1 (or all 10); that is enough for the model to write those scores confidently."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mondrian.prompts import Prompt
from mondrian.runtime.protocol import GenerationRequest
from mondrian.schema import DIMENSIONS, Critique

pytestmark = pytest.mark.model

TEXT_CHARS = 40
LIST_ITEMS = 2
PIXELS = 56 * 56
STEPS = 80


def _photo() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))


def _critique(score: int) -> Critique:
    return Critique.model_validate(
        {
            "image_description": "A noisy field",
            "dimensions": {
                key: {"score": score, "comment": "Plain", "recommendation": "Keep"}
                for key in DIMENSIONS
            },
            "strengths": ["tone"],
            "improvements": ["more"],
        }
    )


def _train_adapter(base_dir, out_dir, prompt, target: str) -> None:
    """A LoRA fitted to one (prompt, target) pair with the prompt masked out of the loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mondrian.images import fit_pixels

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(base_dir)
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    text = processor.apply_chat_template(
        prompt.messages(), add_generation_prompt=True, tokenize=False
    )
    images = [fit_pixels(img, PIXELS) for img in prompt.images]
    enc = processor(text=[text], images=images, return_tensors="pt")
    tok = processor.tokenizer
    answer = tok(target, add_special_tokens=False)["input_ids"]
    answer.append(tok.convert_tokens_to_ids("<|im_end|>"))
    prompt_ids = enc["input_ids"][0].tolist()
    input_ids = torch.tensor([prompt_ids + answer])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer])
    extra = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    if "mm_token_type_ids" in enc:
        extra["mm_token_type_ids"] = torch.tensor(
            [enc["mm_token_type_ids"][0].tolist() + [0] * len(answer)]
        )
    config = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj|up_proj|down_proj)",
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-3)
    for _ in range(STEPS):
        # Logits for the answer positions only: the 151,643-token head over the whole
        # prompt would dominate the step.
        logits = peft_model(input_ids=input_ids, logits_to_keep=len(answer) + 1, **extra).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, -len(answer) :])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    peft_model.save_pretrained(out_dir, safe_serialization=True)


@pytest.fixture(scope="module")
def trained(tiny_checkpoint_factory, tmp_path_factory):
    from mondrian.runtime.transformers_backend import TransformersBackend
    from mondrian.training.dataset import target_text

    base_dir = tiny_checkpoint_factory(vocab="real")
    # A short prompt: the loss and the forward stay cheap on a 2-core CPU.
    prompt = Prompt(system="You critique photos as JSON.", user="Critique.", images=[_photo()])
    backend = TransformersBackend(
        str(base_dir),
        device="cpu",
        max_pixels=PIXELS,
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    root = tmp_path_factory.mktemp("calib-adapters")
    for score in (1, 10):
        name = f"writes{score}"
        _train_adapter(base_dir, root / name, prompt, target_text(_critique(score)))
        backend.load_adapter(name, root / name)
    return backend, prompt


def _old_rule_expected(backend, prompt, adapter: str, text: str) -> dict[str, float]:
    """The expected scores the rule before this one gave (P(10|"1") from "0" against ","
    alone, after the digit softmax), from one forward pass over prompt + answer; printed
    for the record, not asserted."""
    import torch

    from mondrian.images import fit_pixels
    from mondrian.runtime.calibration import score_char_offsets, token_at_offsets

    tok = backend.tokenizer
    chat = backend.processor.apply_chat_template(
        prompt.messages(), add_generation_prompt=True, tokenize=False
    )
    images = [fit_pixels(img, PIXELS) for img in prompt.images]
    enc = backend.processor(text=[chat], images=images, return_tensors="pt")
    answer = tok.encode(text, add_special_tokens=False)
    n = enc["input_ids"].shape[1]
    extra = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    if "mm_token_type_ids" in enc:
        extra["mm_token_type_ids"] = torch.cat(
            [enc["mm_token_type_ids"], torch.zeros(1, len(answer), dtype=torch.long)], 1
        )
    ids = torch.cat([enc["input_ids"], torch.tensor([answer])], 1)
    backend.model.set_adapter(adapter)
    with torch.inference_mode():
        logits = backend.model(input_ids=ids, **extra).logits[0].double()
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    comma = tok.convert_tokens_to_ids(",")
    pieces = [tok.decode([t]) for t in answer]
    where = token_at_offsets(pieces, score_char_offsets("".join(pieces)))
    out = {}
    for key, index in where.items():
        probs = torch.softmax(logits[n + index - 1, digits], 0)
        ten = torch.softmax(logits[n + index, [digits[0], comma]], 0)[0]
        if pieces[index] != "1":
            ten = torch.tensor(0.0)
        value = sum(d * float(p) for d, p in enumerate(probs))
        out[key] = round(value + float(probs[1] * ten) * 9, 4)
    return out


@pytest.mark.parametrize(
    "score",
    [
        1,
        10,
    ],
)
def test_a_confidently_written_score_reports_itself(trained, score):
    backend, prompt = trained
    (result,) = backend.generate([GenerationRequest(prompt=prompt, adapter=f"writes{score}")])
    assert result.critique is not None, result.text
    assert set(result.critique.dimensions.scores().values()) == {score}
    old = _old_rule_expected(backend, prompt, f"writes{score}", result.text)
    print(f"\nwrites {score}: expected {result.expected_scores}\n  old rule {old}")
    assert set(result.expected_scores) == set(DIMENSIONS)
    for value in result.expected_scores.values():
        assert value == pytest.approx(score, abs=0.1)


def test_the_fast_path_reports_the_same_expected_scores(trained):
    from mondrian.runtime.fast_path import FastPath

    backend, prompt = trained
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    requests = [GenerationRequest(prompt=prompt, adapter=f"writes{s}") for s in (1, 10)]
    for mine, theirs in zip(fast.generate(requests), backend.generate(requests), strict=True):
        assert mine.text == theirs.text
        assert mine.expected_scores == pytest.approx(theirs.expected_scores, abs=1e-4)
