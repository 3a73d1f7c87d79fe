"""Turning data-set records into model batches: the chat template, assistant-only labels,
and the image-token check.

The prompt is tokenised exactly as the backend does at inference (chat template with the
generation prompt, then the processor with the image), and the answer is the tokenizer's
encoding of the target text followed by `<|im_end|>`. Labels cover the answer and the
`<|im_end|>` (a model that never learned to close its turn never stops);
everything before is -100. Nothing is ever truncated: an example longer than
`max_seq_len` is an error, since cutting inside the image span breaks the model
("image features and image tokens do not match") and cutting the answer teaches it not
to finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from mondrian.errors import InvalidInput
from mondrian.images import fit_pixels

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"
IMAGE_PAD = "<|image_pad|>"


class ImageTokenMismatch(InvalidInput):
    """A batch whose image placeholder tokens do not match its images (mlx-vlm#824)."""

    code = "image_tokens"


def image_token_id(processor: Any) -> int:
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    return int(token_id)


def expected_image_tokens(image_grid_thw: torch.Tensor, merge_size: int) -> int:
    """How many placeholder tokens the images of `image_grid_thw` take in the text."""
    return int(image_grid_thw.prod(dim=-1).sum()) // (merge_size * merge_size)


def check_image_tokens(
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    pixel_values: torch.Tensor | None,
    image_token: int,
    merge_size: int,
) -> None:
    """Raise `ImageTokenMismatch` unless every row has image tokens and their total is
    what `image_grid_thw` implies.

    Training silently without images (the placeholder stripped, or pixels dropped by a
    collator) gives a text-only LoRA that looks fine by its loss; this makes it loud.
    """
    per_row = (input_ids == image_token).sum(dim=-1)
    if image_grid_thw is None or pixel_values is None or image_grid_thw.numel() == 0:
        raise ImageTokenMismatch(
            f"a training batch has no images (image tokens per row: {per_row.tolist()})"
        )
    if bool((per_row == 0).any()):
        raise ImageTokenMismatch(
            f"a training batch has rows without image tokens: {per_row.tolist()}"
        )
    expected = expected_image_tokens(image_grid_thw, merge_size)
    found = int(per_row.sum())
    if found != expected:
        raise ImageTokenMismatch(
            f"a training batch has {found} image tokens but its images "
            f"(grids {image_grid_thw.tolist()}) need {expected}"
        )


def check_batch_images(batch: dict[str, torch.Tensor], image_token: int, merge_size: int) -> None:
    """`check_image_tokens` on a Collator batch: what both trainers run on every batch."""
    check_image_tokens(
        batch["input_ids"],
        batch.get("image_grid_thw"),
        batch.get("pixel_values"),
        image_token,
        merge_size,
    )


class ExampleEncoder:
    """Encodes one record (messages + image paths) into ids, labels and pixels."""

    def __init__(self, processor: Any, max_pixels: int, max_seq_len: int) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_pixels = max_pixels
        self.max_seq_len = max_seq_len
        self.end_of_turn = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if not isinstance(self.end_of_turn, int) or self.end_of_turn == self.tokenizer.unk_token_id:
            raise InvalidInput(f"the tokenizer has no {END_OF_TURN} token")
        self.image_token = image_token_id(processor)
        self.merge_size = int(processor.image_processor.merge_size)

    def prompt_and_target(self, record: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        messages = record["messages"]
        last = messages[-1]
        if last["role"] != "assistant":
            raise InvalidInput("a training record must end with the assistant's answer")
        content = last["content"]
        if isinstance(content, str):
            return messages[:-1], content
        return messages[:-1], "".join(part["text"] for part in content if "text" in part)

    def load_images(self, record: dict[str, Any]) -> list[Image.Image]:
        images = []
        for path in record["images"]:
            with Image.open(path) as img:
                images.append(fit_pixels(img.convert("RGB"), self.max_pixels))
        return images

    def encode(self, record: dict[str, Any]) -> dict[str, Any]:
        prompt_messages, target = self.prompt_and_target(record)
        images = self.load_images(record)
        slots = sum(
            1
            for m in prompt_messages
            if isinstance(m["content"], list)
            for part in m["content"]
            if part.get("type") == "image"
        )
        if slots != len(images):
            raise InvalidInput(f"a record has {slots} image slots but {len(images)} images")
        prompt = self.processor.apply_chat_template(
            prompt_messages, add_generation_prompt=True, tokenize=False
        )
        enc = self.processor(text=[prompt], images=images or None, return_tensors="pt")
        prompt_ids = enc["input_ids"][0].tolist()
        answer_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        answer_ids = [*answer_ids, self.end_of_turn]
        input_ids = prompt_ids + answer_ids
        if len(input_ids) > self.max_seq_len:
            raise InvalidInput(
                f"an example ({record['images'][0] if record['images'] else 'text'}) is "
                f"{len(input_ids)} tokens, over max_seq_len {self.max_seq_len}; lower "
                "max_pixels or raise max_seq_len (examples are never truncated)"
            )
        out: dict[str, Any] = {
            "input_ids": input_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
            "pixel_values": enc.get("pixel_values"),
            "image_grid_thw": enc.get("image_grid_thw"),
        }
        if "mm_token_type_ids" in enc:
            # Qwen-VL computes its 3-D rope positions from these; without them training
            # would see other positions than inference does.
            types = enc["mm_token_type_ids"][0].tolist()
            out["mm_token_type_ids"] = types + [0] * len(answer_ids)
        if out["image_grid_thw"] is not None:
            check_image_tokens(
                torch.tensor([input_ids]),
                out["image_grid_thw"],
                out["pixel_values"],
                self.image_token,
                self.merge_size,
            )
        return out


class Collator:
    """Pads encoded examples on the right into one batch."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)

        def pad(key: str, value: int) -> torch.Tensor:
            rows = [e[key] + [value] * (width - len(e[key])) for e in examples]
            return torch.tensor(rows, dtype=torch.long)

        batch: dict[str, torch.Tensor] = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "labels": pad("labels", IGNORE_INDEX),
            "attention_mask": torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples],
                dtype=torch.long,
            ),
        }
        if all("mm_token_type_ids" in e for e in examples):
            batch["mm_token_type_ids"] = pad("mm_token_type_ids", 0)
        pixels = [e["pixel_values"] for e in examples if e.get("pixel_values") is not None]
        grids = [e["image_grid_thw"] for e in examples if e.get("image_grid_thw") is not None]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels, dim=0)
            batch["image_grid_thw"] = torch.cat(grids, dim=0)
        return batch


def answer_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss (after the model's one-token shift)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
