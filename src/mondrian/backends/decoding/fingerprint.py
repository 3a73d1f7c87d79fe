"""Which base model is this? Adapters record the fingerprint of the base they were trained
on; loading one on another base is refused (the seeds OOMed on exactly that mismatch).

The fingerprint hashes the architecture's shape and the signs of the first embedding
values: the same checkpoint gives the same fingerprint in any dtype and from a hub id or a
local path, while two random tiny checkpoints of different seeds differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_SHAPE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "depth",
    "embed_dim",
    "out_hidden_size",
)
_SAMPLE = 64


def _shape(config: Any) -> dict[str, Any]:
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    shape: dict[str, Any] = {k: data[k] for k in _SHAPE_KEYS if k in data}
    for sub in ("text_config", "vision_config"):
        if isinstance(data.get(sub), dict):
            shape[sub] = {k: data[sub][k] for k in _SHAPE_KEYS if k in data[sub]}
    return shape


def model_fingerprint(model: Any) -> str:
    """sha256 (16 hex digits) of the model's shape and the signs of its first embeddings."""
    embedding = model.get_input_embeddings().weight
    signs = "".join("1" if v > 0 else "0" for v in embedding.detach()[0, :_SAMPLE].tolist())
    payload = json.dumps({"shape": _shape(model.config), "signs": signs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
