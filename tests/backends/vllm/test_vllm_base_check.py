"""The vllm backend's base-model check by weights: where the server's model (`/v1/models`'
root) is a folder readable here, an adapter's recorded base fingerprint is compared with
that folder's (backends/decoding/fingerprint.py's folder_fingerprint); elsewhere the names
are, and a log line says so. The server is the recorded one (replay.py) with its root
pointed at tiny checkpoints."""

from __future__ import annotations

import copy
import json
import logging

import pytest
from replay import URL, Replay, fixture

from mondrian import adapter_format
from mondrian.adapter_format import AdapterMeta
from mondrian.backends.decoding.fingerprint import folder_fingerprint, model_fingerprint
from mondrian.backends.vllm.backend import VLLMBackend
from mondrian.backends.vllm.client import VLLMClient
from mondrian.errors import InvalidInput


def serving(root: str) -> VLLMBackend:
    models = copy.deepcopy(fixture("models")["body"])
    models["data"][0]["root"] = root
    client = VLLMClient(URL, timeout_s=5, transport=Replay(models).transport)
    return VLLMBackend(None, client=client)


def adapter(tmp_path, name: str, base_model: str, fingerprint: str | None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    meta = AdapterMeta(base_model=base_model, base_fingerprint=fingerprint)
    adapter_format.write_meta(folder, meta)
    return folder


@pytest.fixture(scope="module")
def two_bases(tiny_checkpoint_factory):
    """Two tiny checkpoints of one architecture and different weights (seeds 0 and 1)."""
    return tiny_checkpoint_factory(seed=0), tiny_checkpoint_factory(seed=1)


def test_a_folders_fingerprint_is_the_loaded_models_in_any_saved_dtype(two_bases, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText

    zero, one = two_bases
    model = AutoModelForImageTextToText.from_pretrained(zero)
    assert folder_fingerprint(zero) == model_fingerprint(model)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert folder_fingerprint(tmp_path / "bf16") == folder_fingerprint(zero)
    assert folder_fingerprint(one) != folder_fingerprint(zero)
    assert folder_fingerprint(tmp_path / "absent") is None


def test_the_same_weights_under_another_name_pass(two_bases, tmp_path):
    zero, _ = two_bases
    backend = serving(str(zero))
    path = adapter(tmp_path, "a", "Qwen/Qwen2.5-VL-3B-Instruct", folder_fingerprint(zero))
    backend.load_adapter("ansel@v2", path)  # by name alone this would be refused
    assert backend.adapters() == ["ansel@v2"]


def test_other_weights_are_refused_naming_both_even_under_the_same_name(two_bases, tmp_path):
    zero, one = two_bases
    backend = serving(str(one))
    # The adapter says it was trained on the folder the server loaded, but on seed 0's
    # weights: the folder now holds other ones.
    path = adapter(tmp_path, "a", str(one), folder_fingerprint(zero))
    with pytest.raises(InvalidInput) as caught:
        backend.load_adapter("ansel@v2", path)
    message = caught.value.message
    assert caught.value.code == "base_mismatch"
    assert folder_fingerprint(zero) in message and folder_fingerprint(one) in message
    assert repr(str(one)) in message
    assert backend.adapters() == []


def test_a_folder_not_readable_here_falls_back_to_names_and_says_so(two_bases, tmp_path, caplog):
    zero, _ = two_bases
    backend = serving("/srv/elsewhere/tiny")  # the server's host, not this one
    fingerprint = folder_fingerprint(zero)
    with caplog.at_level(logging.INFO, logger="mondrian.backends.vllm.adapters"):
        backend.load_adapter("ansel@v2", adapter(tmp_path, "a", "/srv/elsewhere/tiny", fingerprint))
    assert "comparing names" in caplog.text and "/srv/elsewhere/tiny" in caplog.text
    with pytest.raises(InvalidInput, match=r"base model 'Qwen/Qwen2\.5-VL-7B-Instruct'"):
        backend.load_adapter(
            "ansel@v3", adapter(tmp_path, "b", "Qwen/Qwen2.5-VL-7B-Instruct", fingerprint)
        )
