"""Training settings: shipped config files load, flags override them, and the LoRA target
regex reaches the language model's linears and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mondrian.errors import InvalidInput
from mondrian.training.config import LM_TARGET_REGEX, TrainConfig, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "train").glob("*.toml"))


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"tiny.toml", "qwen2_5_vl_3b.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    # A config file sets something: loading it must not just give the defaults.
    assert config != TrainConfig()


def test_every_field_has_a_default_and_help():
    for name, field in TrainConfig.model_fields.items():
        assert not field.is_required(), name
        assert field.description and "\n" not in field.description, name


def test_flags_override_the_file_and_none_means_unset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("rank = 8\nlr = 1e-3\n")
    config = load_config(path, rank=32, lr=None, epochs=5)
    assert (config.rank, config.lr, config.epochs) == (32, 1e-3, 5)


def test_a_train_table_is_read_too(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nrank = 4\n")
    assert load_config(path).rank == 4


@pytest.mark.parametrize(
    "text",
    ["rank = 0\n", "unknown_key = 1\n", "dropout = 1.5\n", "scheduler = 'exp'\n", "rank = [\n"],
)
def test_bad_files_are_user_errors(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput):
        load_config(path)


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(InvalidInput, match="no such config"):
        load_config(tmp_path / "nope.toml")


def test_fingerprint_ignores_epochs_and_runtime_knobs_only():
    base = TrainConfig()
    assert base.fingerprint() == base.merged(epochs=9, device="cpu", cpu_threads=1).fingerprint()
    assert base.fingerprint() != base.merged(lr=1e-3).fingerprint()


@pytest.mark.parametrize(
    "name",
    [
        "model.language_model.layers.0.self_attn.q_proj",
        "model.language_model.layers.27.self_attn.o_proj",
        "model.language_model.layers.3.mlp.gate_proj",
        "model.language_model.layers.3.mlp.down_proj",
        "model.layers.1.mlp.up_proj",  # transformers 4 naming
    ],
)
def test_target_regex_takes_the_language_model_linears(name):
    assert re.fullmatch(LM_TARGET_REGEX, name)


@pytest.mark.parametrize(
    "name",
    [
        "model.visual.blocks.0.mlp.gate_proj",  # the vision tower has gate/up/down too
        "model.visual.blocks.0.attn.qkv",
        "model.visual.merger.mlp.0",
        "lm_head",
        "model.language_model.embed_tokens",
        "model.language_model.layers.0.self_attn",
        "model.language_model.layers.0.mlp.gate_proj.lora_A",
    ],
)
def test_target_regex_leaves_everything_else(name):
    assert not re.fullmatch(LM_TARGET_REGEX, name)
