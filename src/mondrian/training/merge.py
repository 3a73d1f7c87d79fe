"""Fold an adapter into its base model: a full checkpoint (model + processor) that serves
without PEFT, e.g. on engines that take one model and no adapters.

The merge runs in float32 by default, so the merged weights are W + scale * B @ A without
a rounding step in between, and the merged model's greedy output equals base + adapter.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from mondrian import adapter_format
from mondrian.errors import InvalidInput, Unavailable
from mondrian.hf_progress import quiet_hf_progress
from mondrian.staging import prepare_out_dir, staged_output
from mondrian.storage.db import utcnow

MERGED_INFO = "mondrian_merged.json"
# Files a Hub-style checkpoint carries that `processor.save_pretrained` may not rewrite
# (older readers look for them); copied from a local base when the merge lacks them.
_CARRY_OVER = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "chat_template.jinja",
    "chat_template.json",
)


def merge_adapter(
    adapter_dir: Path,
    out_dir: Path,
    *,
    base_model: str | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> Path:
    """Write base + adapter, merged, to `out_dir` (complete or not at all)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mondrian.backends.decoding.fingerprint import model_fingerprint

    adapter_dir = Path(adapter_dir)
    meta = adapter_format.verify_dir(adapter_dir, require_meta=False)
    peft_config = adapter_format.read_peft_config(adapter_dir)
    base = base_model or meta.base_model or peft_config.get("base_model_name_or_path")
    if not base:
        raise InvalidInput(f"{adapter_dir} does not name its base model; pass --model")
    out_dir = prepare_out_dir(out_dir, force, MERGED_INFO, "a merged model")

    try:
        processor = AutoProcessor.from_pretrained(base)
        with quiet_hf_progress():
            model = AutoModelForImageTextToText.from_pretrained(base, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot load base model {base!r}: {exc}") from None
    fingerprint = model_fingerprint(model)
    adapter_format.check_base(
        meta,
        fingerprint,
        adapter="the adapter",
        loaded=f"{base!r} has fingerprint {fingerprint}",
        fix="pass the matching --model",
    )
    with warnings.catch_warnings():
        # PEFT asks the model `is_gradient_checkpointing`, which transformers 5 deprecates.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()

    written = meta.as_dict()
    with staged_output(out_dir) as staging:
        with quiet_hf_progress():
            merged.save_pretrained(staging)
        processor.save_pretrained(staging)
        base_dir = Path(base)
        if base_dir.is_dir():
            for name in _CARRY_OVER:
                if (base_dir / name).is_file() and not (staging / name).exists():
                    shutil.copy2(base_dir / name, staging / name)
        info = {
            "format": "mondrian-merged/1",
            "adapter": meta.ref,
            "adapter_path": str(adapter_dir),
            "base_model": base,
            "base_fingerprint": fingerprint,
            "dtype": dtype,
            "adapter_meta": {k: written[k] for k in _META_KEYS if k in written},
            "created_at": utcnow(),
        }
        (staging / MERGED_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir


_META_KEYS = (
    "hyperparameters",
    "dataset",
    "prompt_version",
    "facts_version",
    "schema_version",
    "metrics",
)
