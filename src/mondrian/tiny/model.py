"""The tiny checkpoints' model: a config of the family's real class with tiny dimensions,
random weights drawn from a seed, and the generation config.

- `lm_head` is re-drawn with std 1/sqrt(hidden) and not tied to the embeddings (tiny
  vocabulary): with the default std 0.02 a tiny random head caps logits near 3 and LoRA
  cannot fit anything. The real vocabulary's checkpoint ties them, as Qwen2.5-VL-3B does.
- The model's vocabulary (4096) is larger than the tokenizer's (4014 to 4026), as in the
  real checkpoints (151936 vs 151665): code that sizes things by `len(tokenizer)` instead
  of `config.vocab_size` breaks here as it would on the real model.
"""

from __future__ import annotations

from typing import Any

from mondrian.tiny.families import (
    DEFAULT_VOCAB,
    MERGE_SIZE,
    TEMPORAL_PATCH_SIZE,
    check_vocab,
    family,
)

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


def build_config(arch: str, ids: dict[str, int], vocab: str = DEFAULT_VOCAB) -> Any:
    """A config of the family's real class with tiny dimensions and the given token ids."""
    import transformers

    facts = family(arch)
    real = check_vocab(vocab) == "real"
    # The real vocabulary's embedding is tied to the head, as in Qwen2.5-VL-3B: it halves
    # the checkpoint (the embedding is most of it) and runs the tied-weights code paths.
    tied = real
    rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": facts.rope_theta,
        "mrope_section": list(facts.mrope_section),
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
        "patch_size": facts.patch_size,
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

    if sum(facts.mrope_section) != HEAD_DIM // 2:  # a bad edit above, not a user error
        raise RuntimeError("mrope_section must add up to head_dim/2")
    config_class = getattr(transformers, facts.config_class)
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

    facts = family(arch)
    model_class = getattr(transformers, facts.model_class)
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


def build_generation_config(arch: str, ids: dict[str, int], vocab: str = DEFAULT_VOCAB) -> Any:
    """The stop and pad ids; greedy for the tiny vocabulary, the real checkpoints' sampling
    fields and penalty for the real one (which critiques must not follow)."""
    from transformers import GenerationConfig

    sampling = family(arch).real_sampling if check_vocab(vocab) == "real" else {"do_sample": False}
    return GenerationConfig(
        bos_token_id=ids["endoftext"],
        # The turn ends at <|im_end|>; <|endoftext|> also stops, as in the real configs.
        eos_token_id=[ids["im_end"], ids["endoftext"]],
        pad_token_id=ids["endoftext"],
        **sampling,
    )
