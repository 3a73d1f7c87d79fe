"""`mondrian train`'s settings flags are TrainConfig's fields: one flag per field with the
field's type, choices, help and default; the flags override a --config file; and a bad
value is named by its flag at the CLI, by its field in a file and in the library."""

from __future__ import annotations

import argparse

import pytest

from mondrian.cli import training_cmd
from mondrian.errors import InvalidInput
from mondrian.training.config import ConfigError, TrainConfig, load_config

# The flags `mondrian train` had before they were generated: each must still work.
EARLIER_FLAGS = {
    "--model": "m",
    "--rank": "8",
    "--alpha": "4",
    "--dropout": "0.1",
    "--lr": "0.001",
    "--epochs": "2",
    "--batch-size": "2",
    "--grad-accum": "3",
    "--max-pixels": "50176",
    "--seed": "5",
    "--device": "cpu",
    "--dtype": "float32",
}


def _parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mondrian")
    training_cmd.register_train(root.add_subparsers())
    return root


def _parse(*flags: str) -> argparse.Namespace:
    return _parser().parse_args(["train", "--advisor", "a", "--dataset", "d", *flags])


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_every_field_is_a_flag_with_its_help_and_default(capsys):
    text = _help(capsys)
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(field.description.split()) in text, name
    assert "--rank RANK LoRA rank r. Default: 16." in text
    assert "--lr LR Peak learning rate (AdamW). Default: 0.0002." in text
    assert "--gradient-checkpointing, --no-gradient-checkpointing" in text
    assert "--scheduler {cosine,linear,constant}" in text


def test_the_earlier_flags_still_parse_into_the_config():
    flags = [part for item in EARLIER_FLAGS.items() for part in item]
    config = training_cmd.config_from(_parse(*flags))
    assert config.model_dump(include={"model", "device", "dtype"}) == {
        "model": "m",
        "device": "cpu",
        "dtype": "float32",
    }
    assert (config.rank, config.alpha, config.dropout, config.lr) == (8, 4.0, 0.1, 0.001)
    assert (config.epochs, config.batch_size, config.grad_accum) == (2, 2, 3)
    assert (config.max_pixels, config.seed) == (50176, 5)


def test_unset_flags_leave_the_file_and_the_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("rank = 8\nlr = 1e-3\ngradient_checkpointing = true\n")
    args = _parse("--config", str(path), "--lr", "0.01", "--scheduler", "linear")
    config = training_cmd.config_from(args)
    assert (config.rank, config.lr, config.scheduler) == (8, 0.01, "linear")
    assert config.gradient_checkpointing is True
    assert config.epochs == TrainConfig().epochs
    args = _parse("--config", str(path), "--no-gradient-checkpointing", "--cpu-threads", "2")
    config = training_cmd.config_from(args)
    assert config.gradient_checkpointing is False and config.cpu_threads == 2


def test_argparse_refuses_what_is_not_the_fields_type(capsys):
    for flags in (["--rank", "two"], ["--scheduler", "exp"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit):
            _parse(*flags)
        assert f"argument {flags[0]}" in capsys.readouterr().err


def test_a_bad_flag_value_is_named_by_its_flag():
    with pytest.raises(InvalidInput) as caught:
        training_cmd.config_from(_parse("--lr", "-1", "--batch-size", "0"))
    message = str(caught.value)
    assert message == (
        "invalid training config: --lr: Input should be greater than 0; "
        "--batch-size: Input should be greater than or equal to 1"
    )


def test_a_bad_file_value_is_named_by_its_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("batch_size = 0\n")
    with pytest.raises(ConfigError) as caught:
        training_cmd.config_from(_parse("--config", str(path)))
    assert str(caught.value) == (
        f"{path}: invalid training config: batch_size: Input should be greater than or equal to 1"
    )


def test_library_errors_name_the_fields(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(None, lr=-1.0)
    assert caught.value.problems == [("lr", "Input should be greater than 0")]
    assert caught.value.source is None
    assert str(caught.value) == "invalid training config: lr: Input should be greater than 0"
