"""Tiny checkpoints: real architectures that load offline, generate with an image, and are
byte-identical for a seed."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from mondrian import __version__
from mondrian.errors import InvalidInput, MondrianError
from mondrian.tiny.checkpoint import make_tiny, read_info, sha256_file
from mondrian.tiny.families import ARCHES, FAMILIES, MERGE_SIZE
from mondrian.tiny.model import MODEL_VOCAB_SIZE, REAL_MODEL_VOCAB_SIZE
from mondrian.tiny.processor import MAX_IMAGE_TOKENS, MIN_IMAGE_TOKENS, pixel_budget

pytestmark = pytest.mark.model


def _photo(width: int = 400, height: int = 300):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _messages(n_images: int = 1) -> list[dict]:
    content = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": "Critique this photograph."})
    return [
        {"role": "system", "content": "You are Ansel Adams."},
        {"role": "user", "content": content},
    ]


def test_checkpoint_is_consistent(tiny_checkpoint):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    info = read_info(tiny_checkpoint)
    arch = info["arch"]
    config = AutoConfig.from_pretrained(tiny_checkpoint)
    text = config.text_config
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert type(config).__name__ == FAMILIES[arch].config_class

    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert text.rope_parameters["rope_theta"] == FAMILIES[arch].rope_theta
    get = tokenizer.convert_tokens_to_ids
    assert config.image_token_id == get("<|image_pad|>")
    assert config.video_token_id == get("<|video_pad|>")
    assert config.vision_start_token_id == get("<|vision_start|>")
    assert config.vision_end_token_id == get("<|vision_end|>")
    assert text.vocab_size == MODEL_VOCAB_SIZE >= len(tokenizer)
    assert config.tie_word_embeddings is False
    vision = config.vision_config
    if arch == "qwen3_vl":
        assert text.rope_parameters["mrope_interleaved"] is True
        assert all(0 <= i < vision.depth for i in vision.deepstack_visual_indexes)
        assert len(vision.deepstack_visual_indexes) <= text.num_hidden_layers
        assert math.isqrt(vision.num_position_embeddings) ** 2 == vision.num_position_embeddings
    if arch == "qwen2_5_vl":
        assert all(0 <= i < vision.depth for i in vision.fullatt_block_indexes)

    generation = GenerationConfig.from_pretrained(tiny_checkpoint)
    assert set(generation.eos_token_id) == {get("<|im_end|>"), get("<|endoftext|>")}
    assert generation.pad_token_id == get("<|endoftext|>")

    with safe_open(tiny_checkpoint / "model.safetensors", "pt") as weights:
        dtypes = {str(weights.get_slice(k).get_dtype()) for k in weights.keys()}  # noqa: SIM118
        head = weights.get_tensor("lm_head.weight")
        embed_key = next(k for k in weights.keys() if k.endswith("embed_tokens.weight"))  # noqa: SIM118
        embed = weights.get_tensor(embed_key)
    assert dtypes == {"F32"}
    # Re-drawn head (std 1/sqrt(hidden)), separate from the embeddings (std 0.02).
    assert head.std().item() == pytest.approx(text.hidden_size**-0.5, rel=0.05)
    assert embed.std().item() == pytest.approx(0.02, rel=0.1)

    assert info["seed"] == 0 and info["mondrian_version"] == __version__
    assert info["model_class"] == FAMILIES[arch].model_class
    assert info["sha256"]["model.safetensors"] == sha256_file(tiny_checkpoint / "model.safetensors")
    assert info["sha256"]["tokenizer.json"] == sha256_file(tiny_checkpoint / "tokenizer.json")
    assert (tiny_checkpoint / "chat_template.jinja").read_text() == FAMILIES[arch].chat_template
    legacy = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert (legacy["min_pixels"], legacy["max_pixels"]) == pixel_budget(arch)


def test_loads_offline_and_generates_from_an_image(tiny_checkpoint, monkeypatch):
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arch = read_info(tiny_checkpoint)["arch"]
    family = FAMILIES[arch]
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    # AutoProcessor silently falls back to a bare tokenizer when a part is missing.
    assert type(processor) is getattr(transformers, family.processor_class)
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == family.video_processor_class
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    assert type(model).__name__ == family.model_class
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == read_info(tiny_checkpoint)["param_count"]

    prompt = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert prompt.endswith("<|im_start|>assistant\n")
    inputs = processor(text=[prompt], images=[_photo()], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // MERGE_SIZE**2
    assert MIN_IMAGE_TOKENS <= n_image_tokens <= MAX_IMAGE_TOKENS

    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], MODEL_VOCAB_SIZE)
    assert torch.isfinite(logits).all()
    # The re-drawn head gives logits of unit scale (the default init gives about 0.2).
    assert logits[0, -1].std().item() > 0.5

    prompt_len = inputs["input_ids"].shape[1]
    first = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    again = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert 1 <= first.shape[1] - prompt_len <= 6
    assert torch.equal(first, again)
    assert torch.equal(first[:, :prompt_len], inputs["input_ids"])
    generated = first[0, prompt_len:]
    assert ((generated >= 0) & (generated < MODEL_VOCAB_SIZE)).all()
    # The prompt's ids decode to the prompt, its one placeholder expanded to the image's
    # tokens: the tokenizer round-trips and the processor counted the patches.
    expanded = prompt.replace("<|image_pad|>", "<|image_pad|>" * n_image_tokens)
    assert processor.decode(first[0, :prompt_len]) == expanded


def test_one_placeholder_per_image(tiny_checkpoint):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    prompt = processor.apply_chat_template(_messages(2), add_generation_prompt=True, tokenize=False)
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    inputs = processor(text=[prompt], images=[_photo(), _photo(200, 500)], return_tensors="pt")
    assert inputs["image_grid_thw"].shape[0] == 2
    conversation = [
        *_messages(),
        {"role": "assistant", "content": '{"image_description": "x"}'},
    ]
    rendered = processor.apply_chat_template(conversation, tokenize=False)
    assert rendered.endswith('<|im_start|>assistant\n{"image_description": "x"}<|im_end|>\n')


@pytest.mark.parametrize("arch", ARCHES)
def test_same_seed_same_bytes_other_seed_other_weights(arch, tiny_checkpoint_factory, tmp_path):
    first = tiny_checkpoint_factory(arch, 0)
    again = make_tiny(tmp_path / "again", arch, 0)
    other = make_tiny(tmp_path / "other", arch, 1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha256_file(first / name) == sha256_file(again / name), name
    assert sha256_file(first / "model.safetensors") != sha256_file(other / "model.safetensors")
    assert sha256_file(first / "tokenizer.json") == sha256_file(other / "tokenizer.json")
    assert read_info(other)["seed"] == 1


def test_target_directory_rules(tmp_path, tiny_checkpoint_factory):
    with pytest.raises(InvalidInput, match="unknown architecture"):
        make_tiny(tmp_path / "x", "llava")
    with pytest.raises(InvalidInput, match="seed"):
        make_tiny(tmp_path / "x", "qwen2_vl", -1)

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        make_tiny(occupied, "qwen2_vl")
    with pytest.raises(InvalidInput, match="not a tiny checkpoint"):
        make_tiny(occupied, "qwen2_vl", force=True)
    assert (occupied / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    target = make_tiny(empty, "qwen2_vl", seed=5)
    assert read_info(target)["seed"] == 5
    replaced = make_tiny(target, "qwen2_vl", seed=6, force=True)
    assert read_info(replaced)["seed"] == 6
    # Nothing left beside it: no staging or swapped-out folders.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "occupied"]


def _cli(argv: list[str]) -> int:
    from mondrian.cli import models_cmd

    parser = argparse.ArgumentParser(prog="mondrian")
    models_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_make_tiny(tmp_path, capsys):
    target = tmp_path / "tiny-qwen3"
    assert _cli(["models", "make-tiny", str(target), "--arch", "qwen3_vl", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(target)
    assert "built in" in lines[1] and "qwen3_vl" in lines[1]
    assert read_info(target)["arch"] == "qwen3_vl" and read_info(target)["seed"] == 3
    with pytest.raises(MondrianError, match="--force"):
        _cli(["models", "make-tiny", str(target)])
    with pytest.raises(SystemExit):
        _cli(["models", "make-tiny", str(target), "--arch", "llava"])


def test_cli_reports_errors_through_main(tmp_path, capsys):
    from mondrian.cli import main as cli_main

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    assert cli_main.main(["models", "make-tiny", str(tmp_path / "busy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mondrian: error:") and "\n" not in err


def test_the_real_vocabulary_checkpoint_tokenizes_as_qwen(tiny_checkpoint_factory):
    # The default architecture on Qwen's own BPE: the ids, merges, tied embeddings,
    # processor budget and generation_config of Qwen2.5-VL-Instruct, at tiny dimensions.
    import torch
    from safetensors import safe_open
    from transformers import (
        AutoConfig,
        AutoModelForImageTextToText,
        AutoProcessor,
        GenerationConfig,
    )

    path = tiny_checkpoint_factory(vocab="real")
    info = read_info(path)
    assert (info["arch"], info["vocab"]) == ("qwen2_5_vl", "real")
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = processor.tokenizer
    get = tokenizer.convert_tokens_to_ids
    assert [get(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [
        151643,
        151644,
        151645,
    ]
    assert [get(t) for t in ("<|vision_start|>", "<|image_pad|>", "<|video_pad|>")] == [
        151652,
        151655,
        151656,
    ]
    assert len(tokenizer) == 151665 and min(tokenizer.added_tokens_decoder) == 151643
    assert tokenizer("Hello world").input_ids == [9707, 1879]
    # After a score digit `,"` is one token: what score calibration must read past.
    pieces = [tokenizer.decode([i]) for i in tokenizer('{"score":1,"comment":"').input_ids]
    assert pieces == ['{"', "score", '":', "1", ',"', "comment", '":"']

    config = AutoConfig.from_pretrained(path)
    assert config.text_config.vocab_size == REAL_MODEL_VOCAB_SIZE > len(tokenizer)
    assert config.tie_word_embeddings is True
    assert config.image_token_id == 151655
    with safe_open(path / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # noqa: SIM118  (tied: no head)

    generation = GenerationConfig.from_pretrained(path)
    assert set(generation.eos_token_id) == {151645, 151643}
    sampling = (generation.do_sample, generation.repetition_penalty, generation.temperature)
    assert sampling == (True, 1.05, 0.1)
    assert (generation.top_p, generation.top_k) == (0.001, 1)
    legacy = json.loads((path / "preprocessor_config.json").read_text())
    assert (legacy["min_pixels"], legacy["max_pixels"]) == (3136, 12845056)

    model = AutoModelForImageTextToText.from_pretrained(path)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    prompt = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[_photo(56, 56)], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], REAL_MODEL_VOCAB_SIZE)
    assert torch.isfinite(logits).all()
