"""Tokenising training examples: the prompt exactly as inference builds it, loss on the
answer and its <|im_end|> only, image tokens checked, nothing truncated."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from training_helpers import photo_bytes, short_critique

from mondrian.advisors import get_shipped
from mondrian.errors import InvalidInput
from mondrian.images import fit_pixels
from mondrian.prompts import critique_prompt
from mondrian.training.collate import (
    IGNORE_INDEX,
    Collator,
    ExampleEncoder,
    ImageTokenMismatch,
    check_image_tokens,
)
from mondrian.training.dataset import example_record
from mondrian.training.targets import target_text

pytestmark = pytest.mark.model

MAX_PIXELS = 12544


def _record(tmp_path, index=0, size=(112, 112)):
    path = tmp_path / f"photo{index}.png"
    path.write_bytes(photo_bytes(index, size))
    return example_record(
        get_shipped("ansel"),
        str(path),
        target_text(short_critique(index)),
        image_hash="0" * 64,
        source="curated",
        augmentation_index=0,
    )


@pytest.fixture
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)


def test_labels_cover_the_answer_and_end_of_turn_only(processor, tmp_path):
    encoder = ExampleEncoder(processor, MAX_PIXELS, 4096)
    record = _record(tmp_path)
    encoded = encoder.encode(record)
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(ids) == len(labels)
    answer = [label for label in labels if label != IGNORE_INDEX]
    first = labels.index(answer[0])
    assert all(label == IGNORE_INDEX for label in labels[:first])
    assert ids[first:] == answer  # the answer is the tail, and all of it carries loss
    tokenizer = processor.tokenizer
    assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    target = record["messages"][-1]["content"][0]["text"]
    assert tokenizer.decode(answer) == target + "<|im_end|>"


def test_the_prompt_is_what_inference_sends(processor, tmp_path):
    # The transformers backend: chat template with the generation prompt, then the
    # processor on the text and the image fitted to max_pixels.
    encoder = ExampleEncoder(processor, MAX_PIXELS, 4096)
    record = _record(tmp_path, size=(300, 200))
    encoded = encoder.encode(record)
    image = Image.open(io.BytesIO(photo_bytes(0, (300, 200)))).convert("RGB")
    prompt = critique_prompt(get_shipped("ansel"), image)
    text = processor.apply_chat_template(
        prompt.messages(), add_generation_prompt=True, tokenize=False
    )
    inference = processor(text=[text], images=[fit_pixels(image, MAX_PIXELS)], return_tensors="pt")
    n = inference["input_ids"].shape[1]
    assert encoded["input_ids"][:n] == inference["input_ids"][0].tolist()
    assert torch.equal(encoded["pixel_values"], inference["pixel_values"])
    assert torch.equal(encoded["image_grid_thw"], inference["image_grid_thw"])
    if "mm_token_type_ids" in inference:
        assert encoded["mm_token_type_ids"][:n] == inference["mm_token_type_ids"][0].tolist()
        assert not any(encoded["mm_token_type_ids"][n:])


def test_the_full_conversation_renders_as_prompt_plus_answer(processor, tmp_path):
    # What TRL or mlx-vlm make of a data-set row: the same text as our prompt + answer.
    record = _record(tmp_path)
    prompt = processor.apply_chat_template(
        record["messages"][:-1], add_generation_prompt=True, tokenize=False
    )
    full = processor.apply_chat_template(record["messages"], tokenize=False)
    target = record["messages"][-1]["content"][0]["text"]
    assert full == prompt + target + "<|im_end|>\n"


def test_image_tokens_are_checked(processor, tmp_path):
    encoder = ExampleEncoder(processor, MAX_PIXELS, 4096)
    batch = Collator(0)([encoder.encode(_record(tmp_path, i)) for i in range(2)])
    image_token, merge = encoder.image_token, encoder.merge_size
    args = (batch["image_grid_thw"], batch["pixel_values"], image_token, merge)
    check_image_tokens(batch["input_ids"], *args)

    dropped = batch["input_ids"].clone()
    dropped[0, (dropped[0] == image_token).nonzero()[0]] = 0
    with pytest.raises(ImageTokenMismatch, match="image tokens but its images"):
        check_image_tokens(dropped, *args)
    stripped = batch["input_ids"].masked_fill(batch["input_ids"] == image_token, 0)
    with pytest.raises(ImageTokenMismatch, match="rows without image tokens"):
        check_image_tokens(stripped, *args)
    with pytest.raises(ImageTokenMismatch, match="no images"):
        check_image_tokens(batch["input_ids"], None, None, image_token, merge)


def test_collator_pads_on_the_right(processor, tmp_path):
    encoder = ExampleEncoder(processor, MAX_PIXELS, 4096)
    short = encoder.encode(_record(tmp_path, 0, size=(56, 56)))
    long = encoder.encode(_record(tmp_path, 1, size=(112, 112)))
    assert len(short["input_ids"]) < len(long["input_ids"])
    batch = Collator(pad_token_id=7)([short, long])
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    assert batch["input_ids"][0, n:].eq(7).all() and batch["labels"][0, n:].eq(-100).all()
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert (
        batch["pixel_values"].shape[0]
        == short["pixel_values"].shape[0] + long["pixel_values"].shape[0]
    )


def test_too_long_examples_are_an_error_not_truncated(processor, tmp_path):
    encoder = ExampleEncoder(processor, MAX_PIXELS, max_seq_len=100)
    with pytest.raises(InvalidInput, match="never truncated"):
        encoder.encode(_record(tmp_path))


def test_lora_lands_on_the_language_model_only(tiny_checkpoint):
    from transformers import AutoModelForImageTextToText

    from mondrian.training.config import TrainConfig
    from mondrian.training.setup import add_lora, check_lora_targets

    model = add_lora(AutoModelForImageTextToText.from_pretrained(tiny_checkpoint), TrainConfig())
    wrapped = check_lora_targets(model)
    assert len(wrapped) == 2 * 7  # 2 decoder layers x q,k,v,o,gate,up,down
    assert not any("visual" in n or "lm_head" in n or "embed" in n for n in wrapped)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)


def test_the_answer_loss_equals_the_models_own(tiny_checkpoint, processor, tmp_path):
    """train.answer_loss runs the head on answer positions only; on a padded batch of two it
    gives the model's own shifted cross-entropy, and the same gradients."""
    from transformers import AutoModelForImageTextToText

    from mondrian.training.train import answer_loss

    encoder = ExampleEncoder(processor, MAX_PIXELS, 4096)
    rows = [
        encoder.encode(_record(tmp_path, i, size=s)) for i, s in ((0, (56, 56)), (1, (112, 112)))
    ]
    batch = Collator(pad_token_id=processor.tokenizer.pad_token_id)(rows)
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    reference = model(**batch).loss
    reference.backward()
    expected = model.lm_head.weight.grad.clone()
    model.zero_grad()
    mine = answer_loss(model, batch)
    mine.backward()
    assert float(mine) == pytest.approx(float(reference), rel=1e-5)
    assert torch.allclose(model.lm_head.weight.grad, expected, rtol=1e-4, atol=1e-7)


def test_the_answer_loss_asks_for_positions_as_every_transformers_5_takes_them(
    tiny_checkpoint, processor, tmp_path
):
    """The kept positions reach the model as one 1-D tensor: transformers 5.17's Qwen-VL
    forward indexes the hidden states with `logits_to_keep` as given, which a 2-D boolean
    mask breaks (newer releases take both). The model here is the real one, its forward
    wrapped to record the argument."""
    from transformers import AutoModelForImageTextToText

    from mondrian.training.train import answer_loss

    encoder = ExampleEncoder(processor, MAX_PIXELS, 4096)
    rows = [
        encoder.encode(_record(tmp_path, i, size=s)) for i, s in ((0, (56, 56)), (1, (112, 112)))
    ]
    batch = Collator(pad_token_id=processor.tokenizer.pad_token_id)(rows)
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    seen: list[torch.Tensor] = []
    forward = model.forward

    def recording(*args, logits_to_keep, **kwargs):
        seen.append(logits_to_keep)
        return forward(*args, logits_to_keep=logits_to_keep, **kwargs)

    model.forward = recording
    answer_loss(model, batch)
    (kept,) = seen
    assert kept.ndim == 1 and kept.dtype == torch.long
    assert int(kept.max()) < batch["input_ids"].shape[1] - 1  # the last token predicts nothing
