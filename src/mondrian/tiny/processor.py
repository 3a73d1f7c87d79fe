"""The tiny checkpoints' processor: the family's image and video processors with a small
pixel budget (tiny vocabulary) or the real checkpoints' (real vocabulary), the tokenizer
and the chat template, plus the two legacy preprocessor files Hub checkpoints carry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mondrian.tiny.families import (
    DEFAULT_VOCAB,
    MERGE_SIZE,
    TEMPORAL_PATCH_SIZE,
    check_vocab,
    family,
)

# An image becomes between 4 and 64 tokens: factor is patch_size * merge_size.
MIN_IMAGE_TOKENS = 4
MAX_IMAGE_TOKENS = 64


def pixel_budget(arch: str, vocab: str = DEFAULT_VOCAB) -> tuple[int, int]:
    """(min_pixels, max_pixels) of the processors: 4 to 64 image tokens for the tiny
    vocabulary; the real checkpoints' budget for the real one (the backend's own
    `max_pixels` bounds a photo further)."""
    facts = family(arch)
    if check_vocab(vocab) == "real":
        return facts.real_pixels
    factor = facts.patch_size * MERGE_SIZE
    return MIN_IMAGE_TOKENS * factor * factor, MAX_IMAGE_TOKENS * factor * factor


def build_processor(arch: str, tokenizer: Any, vocab: str = DEFAULT_VOCAB) -> Any:
    """Processor = image processor + tokenizer + video processor; a small pixel budget for
    the tiny vocabulary, the real checkpoints' for the real one."""
    import transformers

    facts = family(arch)
    min_pixels, max_pixels = pixel_budget(arch, vocab)
    common: dict[str, Any] = {
        "patch_size": facts.patch_size,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "image_mean": list(facts.image_mean),
        "image_std": list(facts.image_std),
    }
    image_processor = transformers.Qwen2VLImageProcessor(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **common
    )
    video_processor = getattr(transformers, facts.video_processor_class)(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels * 4}, **common
    )
    processor_class = getattr(transformers, facts.processor_class)
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=facts.chat_template,
    )


def write_legacy_processor_files(
    processor: Any, directory: Path, arch: str, vocab: str = DEFAULT_VOCAB
) -> None:
    """Also write `preprocessor_config.json` and `video_preprocessor_config.json`.

    transformers 5 reads everything from `processor_config.json`, but Hub checkpoints carry
    these two files and older readers (transformers 4.x in a vLLM or mlx-vlm environment)
    look for them, including the `min_pixels`/`max_pixels` keys.
    """
    min_pixels, max_pixels = pixel_budget(arch, vocab)
    processor.image_processor.save_pretrained(directory)
    processor.video_processor.save_pretrained(directory)
    extra = {
        "preprocessor_config.json": {
            "processor_class": type(processor).__name__,
            "min_pixels": min_pixels,
            "max_pixels": max_pixels,
        },
        "video_preprocessor_config.json": {"processor_class": type(processor).__name__},
    }
    for name, keys in extra.items():
        path = directory / name
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(keys)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
