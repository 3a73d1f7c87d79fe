"""The per-architecture facts of the tiny checkpoints: which transformers classes a family
uses, its special and added tokens, chat template, patch size, normalization, rotary
settings, and the real checkpoints' processor budget and sampling fields.

Light: no heavy import, so the CLI can list the architectures without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources

from mondrian.errors import InvalidInput

ARCHES: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl")
DEFAULT_ARCH = "qwen2_5_vl"
VOCABS: tuple[str, ...] = ("tiny", "real")
DEFAULT_VOCAB = "tiny"

# Every family merges 2x2 patches into one token and takes frames in pairs, as the real ones.
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2

# The Qwen special tokens in their real order (ids 151643.. in the real vocabularies).
_QWEN2_VL_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added after those, not flagged special (so `skip_special_tokens` keeps them), as in Qwen2.5.
_QWEN2_5_ADDED = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_QWEN3_ADDED = (*_QWEN2_5_ADDED, "<tool_response>", "</tool_response>", "<think>", "</think>")

# Qwen2-VL-7B-Instruct's chat template; Qwen2.5-VL ships the same text.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL-8B-Instruct's chat template, byte for byte (5292 bytes, sha256 3636d0f0...89e4;
# tests/tiny/test_tiny.py checks). Unlike Qwen2-VL's it adds no default system turn.
QWEN3_VL_CHAT_TEMPLATE = (
    resources.files("mondrian.tiny")
    .joinpath("data", "qwen3_vl_chat_template.jinja")
    .read_bytes()
    .decode("utf-8")
)

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Family:
    """One architecture: its transformers classes, tokens, template and the real facts."""

    model_class: str
    config_class: str
    processor_class: str
    video_processor_class: str
    special_tokens: tuple[str, ...]
    added_tokens: tuple[str, ...]
    chat_template: str
    patch_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    rope_theta: float
    # Split of head_dim/2 rotary frequencies over (time, height, width); the real models'
    # proportions scaled to head_dim 32 (real: [16, 24, 24] and [24, 20, 20] at 128).
    mrope_section: tuple[int, int, int]
    # (min_pixels, max_pixels) of the real checkpoints' preprocessor_config.json.
    real_pixels: tuple[int, int]
    # The real Instruct checkpoints' generation_config.json sampling fields.
    real_sampling: dict[str, float | int | bool]


# The sampling fields of Qwen2.5-VL-3B-Instruct's generation_config.json (used for both
# Qwen2 families): sampling on, near-greedy, and a repetition penalty. Qwen3-VL-8B-Instruct's
# sample for real and carry a neutral penalty. Critiques ignore both (greedy, constrained).
_QWEN2_5_SAMPLING: dict[str, float | int | bool] = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
}
_QWEN3_SAMPLING: dict[str, float | int | bool] = {
    "do_sample": True,
    "repetition_penalty": 1.0,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}


_QWEN2_VL = Family(
    model_class="Qwen2VLForConditionalGeneration",
    config_class="Qwen2VLConfig",
    processor_class="Qwen2VLProcessor",
    video_processor_class="Qwen2VLVideoProcessor",
    special_tokens=_QWEN2_VL_SPECIAL,
    added_tokens=(),
    chat_template=QWEN2_VL_CHAT_TEMPLATE,
    patch_size=14,
    image_mean=_CLIP_MEAN,
    image_std=_CLIP_STD,
    rope_theta=1_000_000.0,
    mrope_section=(4, 6, 6),
    real_pixels=(3136, 12845056),
    real_sampling=_QWEN2_5_SAMPLING,
)

FAMILIES: dict[str, Family] = {
    "qwen2_vl": _QWEN2_VL,
    # Qwen2.5-VL is Qwen2-VL's vision and text facts under its own classes, plus the tool
    # and fill-in-the-middle tokens (its video processor is still Qwen2-VL's).
    "qwen2_5_vl": replace(
        _QWEN2_VL,
        model_class="Qwen2_5_VLForConditionalGeneration",
        config_class="Qwen2_5_VLConfig",
        processor_class="Qwen2_5_VLProcessor",
        added_tokens=_QWEN2_5_ADDED,
    ),
    "qwen3_vl": Family(
        model_class="Qwen3VLForConditionalGeneration",
        config_class="Qwen3VLConfig",
        processor_class="Qwen3VLProcessor",
        video_processor_class="Qwen3VLVideoProcessor",
        special_tokens=_QWEN2_VL_SPECIAL,
        added_tokens=_QWEN3_ADDED,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
        patch_size=16,
        image_mean=_HALF,
        image_std=_HALF,
        rope_theta=5_000_000.0,
        mrope_section=(6, 5, 5),
        real_pixels=(65536, 16777216),
        real_sampling=_QWEN3_SAMPLING,
    ),
}


def family(arch: str) -> Family:
    """The facts of `arch`; an unknown name is the user's error."""
    try:
        return FAMILIES[arch]
    except KeyError:
        raise InvalidInput(
            f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}"
        ) from None


def check_vocab(vocab: str) -> str:
    """`vocab` itself if it names a vocabulary; an unknown name is the user's error."""
    if vocab not in VOCABS:
        raise InvalidInput(f"unknown vocabulary {vocab!r}; choose one of {', '.join(VOCABS)}")
    return vocab
