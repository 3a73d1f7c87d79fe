"""`mondrian adapters merge`: the adapter folded into the base answers exactly as base +
adapter does (greedy, float32, tiny model)."""

from __future__ import annotations

import json

import pytest
from training_helpers import make_peft_adapter, photo_bytes

from mondrian.advisors import get_shipped
from mondrian.errors import InvalidInput
from mondrian.prompts import critique_prompt
from mondrian.training.merge import MERGED_INFO, merge_adapter

pytestmark = [
    pytest.mark.model,
    # PEFT's adapter loading asks transformers a deprecated question; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]


def _request(adapter=None, max_new_tokens=None):
    import io

    from PIL import Image

    from mondrian.backends.protocol import GenerationRequest

    image = Image.open(io.BytesIO(photo_bytes(1))).convert("RGB")
    prompt = critique_prompt(get_shipped("ansel"), image)
    return GenerationRequest(prompt, adapter=adapter, max_new_tokens=max_new_tokens)


def test_merged_model_answers_like_base_plus_adapter(tiny_checkpoint_factory, tmp_path, one_thread):
    from mondrian.backends.transformers.backend import TransformersBackend

    base = tiny_checkpoint_factory()
    adapter = make_peft_adapter(base, tmp_path / "adapter", seed=3)
    merged = merge_adapter(adapter, tmp_path / "merged")
    info = json.loads((merged / MERGED_INFO).read_text())
    assert info["base_model"] == str(base) and info["dtype"] == "float32"
    assert (merged / "model.safetensors").is_file()
    assert (merged / "preprocessor_config.json").is_file()

    # Short strings keep the random adapter's answers short: the test is about equality.
    options = dict(device="cpu", dtype="float32", max_text_chars=8, max_list_items=1)
    unmerged = TransformersBackend(str(base), **options)
    unmerged.load_adapter("a", adapter)
    (with_adapter,) = unmerged.generate([_request("a")])
    (without,) = unmerged.generate([_request(None, max_new_tokens=40)])
    (folded,) = TransformersBackend(str(merged), **options).generate([_request()])
    assert with_adapter.critique is not None and with_adapter.stopped
    # The adapter changes the answer, and the merged model gives the changed one.
    assert with_adapter.text[: len(without.text)] != without.text
    assert folded.text == with_adapter.text


def test_merge_refuses_another_base(tiny_checkpoint_factory, tmp_path):
    adapter = make_peft_adapter(tiny_checkpoint_factory(), tmp_path / "adapter")
    with pytest.raises(InvalidInput, match="fingerprint"):
        merge_adapter(adapter, tmp_path / "merged", base_model=str(tiny_checkpoint_factory(seed=1)))
    assert not (tmp_path / "merged").exists()
