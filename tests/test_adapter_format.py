"""The adapter directory format: metadata read and written one way, one base-model check."""

from __future__ import annotations

import json
import logging

import pytest

from mondrian import adapter_format as fmt
from mondrian.errors import InvalidInput, NotFound


def _adapter(tmp_path, meta=None):
    path = tmp_path / "adapter"
    path.mkdir(parents=True)
    (path / fmt.ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA"}))
    (path / fmt.ADAPTER_WEIGHTS).write_bytes(b"")  # check_files looks only at names
    if meta is not None:
        (path / fmt.ADAPTER_META).write_text(json.dumps(meta))
    return path


def test_metadata_round_trips_with_the_keys_it_was_given(tmp_path):
    path = _adapter(tmp_path)
    meta = fmt.parse_meta({"base_model": "tiny", "training": {"processes": 2}}, "here")
    fmt.write_meta(path, meta)
    assert json.loads((path / fmt.ADAPTER_META).read_text()) == {
        "base_model": "tiny",
        "training": {"processes": 2},  # a key the model does not name is kept
    }
    read = fmt.read_meta(path)
    assert read is not None and read.base_model == "tiny" and read.base_fingerprint is None


def test_unreadable_metadata_is_invalid_input_naming_the_file_and_field(tmp_path):
    path = _adapter(tmp_path)
    assert fmt.read_meta(path) is None
    (path / fmt.ADAPTER_META).write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        fmt.read_meta(path)
    (path / fmt.ADAPTER_META).write_text(json.dumps({"version": "three"}))
    with pytest.raises(InvalidInput, match=r"mondrian_adapter\.json: version: "):
        fmt.read_meta(path)


def test_a_backend_refuses_missing_files(tmp_path):
    with pytest.raises(NotFound, match=r"adapter_config\.json missing"):
        fmt.check_loadable("a", tmp_path, "f0", "base")
    path = _adapter(tmp_path)
    (path / fmt.ADAPTER_WEIGHTS).unlink()
    with pytest.raises(InvalidInput, match=r"adapter a at .* only safetensors"):
        fmt.check_loadable("a", path, "f0", "base")


def test_the_base_check_compares_fingerprints(tmp_path, caplog):
    path = _adapter(tmp_path, {"base_model": "other", "base_fingerprint": "f1"})
    with pytest.raises(InvalidInput) as info:
        fmt.check_loadable("a", path, "f0", "base")
    assert info.value.message == (
        "adapter a was trained on base model 'other' (fingerprint f1) but the loaded model "
        "is 'base' (fingerprint f0); load the matching base model"
    )
    fmt.check_loadable("a", path, "f1", "base")  # the same base: loads

    unchecked = _adapter(tmp_path / "x")
    with caplog.at_level(logging.WARNING, logger=fmt.__name__):
        fmt.check_loadable("b", unchecked, "f0", "base")
    assert "adapter b has no mondrian_adapter.json" in caplog.text


def test_a_trained_adapter_records_this_packages_schema_and_version(tmp_path):
    from mondrian import __version__
    from mondrian.schema import SCHEMA_VERSION

    meta = fmt.AdapterMeta.trained(
        base_fingerprint="f0",
        base_revision=None,
        hyperparameters={"rank": 4},
        dataset={"train_examples": 3},
        metrics={"val_loss": [None, 0.5]},
        prompt_version="p1",
        facts_version="f1",
        training={"processes": 1},
        created_at="2026-01-01T00:00:00.000000Z",
    )
    written = meta.as_dict()
    assert (written["schema_version"], written["package_version"]) == (SCHEMA_VERSION, __version__)
    assert written["base_revision"] is None  # set, so written: "no revision", not unknown
    assert "format" not in written and "ref" not in written  # the registry's to add
    path = _adapter(tmp_path)
    fmt.write_meta(path, meta)
    assert fmt.read_meta(path) == meta
