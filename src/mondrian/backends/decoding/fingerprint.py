"""Which base model is this? Adapters record the fingerprint of the base they were trained
on; loading one on another base is refused (the seeds OOMed on exactly that mismatch).

The fingerprint hashes the architecture's shape and the signs of the first embedding
values: the same checkpoint gives the same fingerprint in any dtype and from a hub id or a
local path, while two random tiny checkpoints of different seeds differ.

`folder_fingerprint` computes the same from a saved checkpoint's files (config.json and
the embedding's first row in its safetensors) without loading it: the vllm backend checks
an adapter against the folder its server loaded (backends/vllm/adapters.py).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
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


def _digest(shape: dict[str, Any], values: list[float]) -> str:
    signs = "".join("1" if v > 0 else "0" for v in values)
    payload = json.dumps({"shape": shape, "signs": signs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_fingerprint(model: Any) -> str:
    """sha256 (16 hex digits) of the model's shape and the signs of its first embeddings."""
    embedding = model.get_input_embeddings().weight
    return _digest(_shape(model.config), embedding.detach()[0, :_SAMPLE].tolist())


# safetensors dtype -> (bytes per value, how to read one value as a float)
_DTYPES = {
    "F64": (8, lambda b: struct.unpack("<d", b)[0]),
    "F32": (4, lambda b: struct.unpack("<f", b)[0]),
    "F16": (2, lambda b: struct.unpack("<e", b)[0]),
    "BF16": (2, lambda b: struct.unpack("<f", b"\0\0" + b)[0]),  # the top half of an f32
}


def folder_fingerprint(folder: Path) -> str | None:
    """`model_fingerprint` of the checkpoint saved in `folder`, read from its files (no
    torch); None when the folder holds no config.json or no embedding this can read."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        values = _first_embedding_row(folder)
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return None if values is None else _digest(_shape(config), values)


def _first_embedding_row(folder: Path) -> list[float] | None:
    """The first _SAMPLE values of the input embedding (`...embed_tokens.weight`)."""
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            names = [n for n in header if n.endswith("embed_tokens.weight")]
            if not names:
                continue
            # The language model's, where a tower has one too (none of Qwen-VL's do).
            name = min(names, key=lambda n: ("language_model" not in n, len(n)))
            entry = header[name]
            width, read = _DTYPES[entry["dtype"]]
            count = min(_SAMPLE, int(entry["shape"][-1]))
            f.seek(8 + size + int(entry["data_offsets"][0]))
            raw = f.read(width * count)
            return [read(raw[i * width : (i + 1) * width]) for i in range(count)]
    return None
