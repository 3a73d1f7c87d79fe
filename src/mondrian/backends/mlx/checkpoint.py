"""Loading a transformers Qwen-VL checkpoint into mlx-vlm, unchanged on disk.

mlx-vlm 0.7 cannot read a transformers-5 `config.json` as saved: Qwen2/2.5-VL
read their text settings from the top level, every family wants `rope_theta` and a
`rope_scaling` with `type` and `mrope_section` where transformers 5 writes
`rope_parameters`, and the vision towers accept only the family's own `model_type`
(`qwen3_vl`, not `qwen3_vl_vision`). `prepare_checkpoint` writes a converted config
into a cache directory beside links to the source's other files; the source checkpoint
is never modified. The weights load as they are: mlx-vlm renames the keys itself.

Importing an mlx-vlm model module replaces `transformers.AutoProcessor.from_pretrained`
for that family, process-wide, with mlx-vlm's own processor (which returns MLX arrays).
A transformers backend in the same process would then get the wrong processor, so every
import and load here runs under `keep_auto_processor()`, which puts the original back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mondrian.errors import Unavailable
from mondrian.staging import staging_area

CONVERTER_VERSION = "1"  # part of the cache key: bump when convert_config changes

# The families Mondrian runs, with mlx-vlm's processor class for each (numpy-based, so
# no torchvision is needed; its image preprocessing equals transformers' PIL processor).
PROCESSORS: dict[str, str] = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
}

_NOT_TEXT = {"model_type", "architectures", "text_config", "vision_config", "auto_map"}


def convert_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config mlx-vlm reads, from a transformers 4 or 5 Qwen-VL config (a new dict).

    Idempotent: an already converted config (or a Hub config in the older flat layout)
    comes back with the same meaning.
    """
    config = json.loads(json.dumps(config))  # deep copy
    model_type = config.get("model_type")
    if model_type not in PROCESSORS:
        raise Unavailable(
            f"the MLX backend runs {', '.join(PROCESSORS)} checkpoints, not {model_type!r}"
        )
    # Text settings: the flat (transformers 4) keys first, the nested ones win.
    text = {k: v for k, v in config.items() if k not in _NOT_TEXT and not isinstance(v, dict)}
    for key in ("rope_scaling", "rope_parameters"):
        if isinstance(config.get(key), dict):
            text[key] = config[key]
    text.update(config.get("text_config") or {})

    rope = dict(text.pop("rope_parameters", None) or text.get("rope_scaling") or {})
    if "rope_theta" not in text and "rope_theta" in rope:
        text["rope_theta"] = rope["rope_theta"]
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    scaling["type"] = scaling.pop("type", None) or scaling.pop("rope_type", None) or "default"
    scaling.pop("rope_type", None)
    if "mrope_section" not in scaling:
        raise Unavailable(f"{model_type} config has no mrope_section in its rope settings")
    if scaling["type"] not in ("mrope", "default"):
        raise Unavailable(f"rope type {scaling['type']!r} is not supported by mlx-vlm")
    text["rope_scaling"] = scaling

    out = dict(config)
    for key, value in text.items():
        if key != "model_type":
            out.setdefault(key, value)
    out["rope_theta"] = text.get("rope_theta", out.get("rope_theta"))
    out["rope_scaling"] = scaling
    out.pop("rope_parameters", None)
    out["text_config"] = text
    vision = dict(config.get("vision_config") or {})
    vision["model_type"] = model_type
    out["vision_config"] = vision
    return out


def resolve_source(model_id: str) -> Path:
    """A local directory for a path or a Hub id (downloaded through mlx-vlm if needed)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path.absolute()
    try:
        from mlx_vlm.utils import get_model_path

        return Path(get_model_path(model_id))
    except Exception as exc:  # hub errors come in many types; all mean "cannot load"
        raise Unavailable(f"cannot load model {model_id!r}: {exc}") from None


def prepare_checkpoint(source: Path, cache_dir: Path) -> Path:
    """A directory mlx-vlm loads: `source` itself, or a converted copy under `cache_dir`.

    The copy holds the converted `config.json` and links to every other file of the
    source. It is keyed by the source path, its config and this converter's version,
    and appears complete or not at all (built beside, renamed into place).
    """
    source = Path(source).absolute()
    config_file = source / "config.json"
    if not config_file.is_file():
        raise Unavailable(f"no config.json in {source}")
    original = json.loads(config_file.read_text(encoding="utf-8"))
    converted = convert_config(original)
    if converted == original:
        return source
    key = hashlib.sha256(
        f"{CONVERTER_VERSION}\0{source}\0{config_file.read_text(encoding='utf-8')}".encode()
    ).hexdigest()[:16]
    target = Path(cache_dir).expanduser().absolute() / f"{source.name}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not `staged_output`: a cache entry is never swapped out, and a rename that loses a
    # race to another process building the same entry is success.
    with staging_area(target.parent, f".{target.name}.partial-") as staging:
        for entry in source.iterdir():
            if entry.name != "config.json":
                os.symlink(entry, staging / entry.name)
        (staging / "config.json").write_text(
            json.dumps(converted, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process winning a race
                raise
    return target


@contextlib.contextmanager
def keep_auto_processor() -> Iterator[None]:
    """Undo mlx-vlm's process-wide patch of `AutoProcessor.from_pretrained` on exit."""
    from transformers import AutoProcessor

    saved = AutoProcessor.__dict__["from_pretrained"]
    try:
        yield
    finally:
        AutoProcessor.from_pretrained = saved


def load_model(path: Path) -> Any:
    """The mlx-vlm model of a prepared checkpoint directory, weights evaluated."""
    with keep_auto_processor():
        from mlx_vlm.utils import load_model as mlx_load_model

        try:
            return mlx_load_model(Path(path))
        except (OSError, ValueError, KeyError) as exc:
            raise Unavailable(f"mlx-vlm cannot load {path}: {exc}") from None


def load_processor(path: Path, model_type: str) -> Any:
    """mlx-vlm's processor for the family, built directly (not through AutoProcessor)."""
    import importlib

    with keep_auto_processor():
        module = importlib.import_module(f"mlx_vlm.models.{model_type}.processing_{model_type}")
        return getattr(module, PROCESSORS[model_type]).from_pretrained(str(path))


def fingerprint(source: Path, model: Any) -> str:
    """The same fingerprint the transformers backend computes for this checkpoint.

    backends/decoding/fingerprint.py hashes the transformers config's shape and the signs of the
    first embedding row; the row comes from the MLX weights (through the embedding layer,
    so a quantized MLX embedding gives its dequantized values).
    """
    import mlx.core as mx
    import numpy as np
    import torch
    from transformers import AutoConfig

    from mondrian.backends.decoding.fingerprint import model_fingerprint

    row = model.language_model.model.embed_tokens(mx.array([[0]]))[0, 0]
    weight = torch.from_numpy(np.array(row.astype(mx.float32))[None, :])
    config = AutoConfig.from_pretrained(str(source))
    shim = SimpleNamespace(
        config=config, get_input_embeddings=lambda: SimpleNamespace(weight=weight)
    )
    return model_fingerprint(shim)
