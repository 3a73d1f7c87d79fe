"""A PEFT LoRA in mlx-vlm's adapter layout, for serving on Apple silicon.

mlx-vlm 0.7.10 (`mlx_vlm/trainer/peft/utils.py: apply_lora_layers`) loads a folder with
`adapters.safetensors` and `adapter_config.json`. With `lora_parameters.keys` in the
config it wraps exactly those modules (`LoRALinear.from_base(layer, r, scale, dropout)`,
names relative to the whole model) and then loads the weights by parameter name. Its
`LoRALinear` computes `y = linear(x) + scale * (x @ lora_a) @ lora_b`, with `lora_a` of
shape (in, r) and `lora_b` of shape (r, out): PEFT's `lora_A.weight` (r, in) and
`lora_B.weight` (out, r) transposed, and `scale` PEFT's `lora_alpha / r`. Its Qwen-VL
models keep the language model at `language_model.model.layers.N`, where transformers 5
has `model.language_model.layers.N`.

The config also carries `rank`, `alpha` and `dropout` at the top level (mlx-vlm's legacy
format, and what people read); mlx-vlm uses `lora_parameters` when both are present.

mlx-vlm's own loader cannot read the `config.json` transformers 5 saves (the text settings
nested under `text_config`, `rope_parameters` for `rope_scaling`, the vision tower's own
`model_type`; backends/mlx/checkpoint.py says what it wants). When the adapter's base is a
local checkpoint, the export also writes `OUT/base/`: that checkpoint with the config
converted (`mlx_checkpoint.convert_config`) and every other file hard-linked (copied
across file systems), so that mlx-vlm alone serves it:

    mlx_vlm.load("OUT/base", adapter_path="OUT")
    python -m mlx_vlm.generate --model OUT/base --adapter-path OUT ...

A Hub base (`Qwen/Qwen2.5-VL-3B-Instruct`) is not downloaded: the export names it, and
mlx-vlm fetches and loads it itself (not exercised by the tests, which run offline).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from mondrian import adapter_format
from mondrian.backends.mlx.checkpoint import convert_config
from mondrian.errors import InvalidInput
from mondrian.staging import prepare_out_dir, staged_output
from mondrian.storage.db import utcnow

MLX_CONFIG = "adapter_config.json"
MLX_WEIGHTS = "adapters.safetensors"
EXPORT_INFO = "mondrian_export.json"
BASE_DIR = "base"

_PEFT_KEY = re.compile(
    r"^base_model\.model\."
    r"(?:model\.language_model|model|language_model\.model)\.layers\.(?P<layer>\d+)\."
    r"(?P<module>(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj))"
    r"\.lora_(?P<ab>[AB])\.weight$"
)
_MLX_KEY = re.compile(
    r"^language_model\.model\.layers\.(?P<layer>\d+)\."
    r"(?P<module>(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj))"
    r"\.lora_(?P<ab>[ab])$"
)


def mlx_module(layer: str, module: str) -> str:
    return f"language_model.model.layers.{layer}.{module}"


def lora_scale(peft_config: dict[str, Any]) -> float:
    """PEFT's scaling factor, the one number mlx-vlm's LoRALinear multiplies by."""
    rank = int(peft_config["r"])
    alpha = float(peft_config["lora_alpha"])
    return alpha / rank**0.5 if peft_config.get("use_rslora") else alpha / rank


def check_convertible(peft_config: dict[str, Any]) -> None:
    """Refuse what mlx-vlm's plain LoRA layers cannot express."""
    problems = []
    if peft_config.get("peft_type") != "LORA":
        problems.append(f"peft_type {peft_config.get('peft_type')!r} (need LORA)")
    if peft_config.get("use_dora"):
        problems.append("DoRA")
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        problems.append("per-module ranks or alphas (one scale only in mlx-vlm)")
    if peft_config.get("bias", "none") != "none" or peft_config.get("lora_bias"):
        problems.append("trained biases")
    if peft_config.get("modules_to_save"):
        problems.append("modules_to_save (fully trained modules)")
    if problems:
        raise InvalidInput("cannot export this adapter to mlx-vlm: " + "; ".join(problems))


def peft_to_mlx(
    tensors: dict[str, Any], peft_config: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mlx weights, mlx adapter_config) from PEFT weights and adapter_config."""
    check_convertible(peft_config)
    weights: dict[str, Any] = {}
    modules: set[str] = set()
    for key, tensor in tensors.items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise InvalidInput(
                f"cannot export {key!r}: only LoRA on the language model's linears converts"
            )
        module = mlx_module(match["layer"], match["module"])
        modules.add(module)
        weights[f"{module}.lora_{match['ab'].lower()}"] = tensor.T.contiguous()
    incomplete = [m for m in modules if not {f"{m}.lora_a", f"{m}.lora_b"} <= set(weights)]
    if incomplete:
        raise InvalidInput(f"adapter weights lack lora_A or lora_B for {sorted(incomplete)}")
    rank = int(peft_config["r"])
    dropout = float(peft_config.get("lora_dropout") or 0.0)
    keys = sorted(modules, key=_module_order)
    config = {
        "fine_tune_type": "lora",
        "num_layers": -1,
        "lora_parameters": {
            "rank": rank,
            "dropout": dropout,
            "scale": lora_scale(peft_config),
            "keys": keys,
        },
        "rank": rank,
        "alpha": float(peft_config["lora_alpha"]),
        "dropout": dropout,
    }
    return weights, config


def mlx_to_peft(weights: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `peft_to_mlx`'s weights, in transformers 5 naming."""
    tensors: dict[str, Any] = {}
    for key, tensor in weights.items():
        match = _MLX_KEY.match(key)
        if match is None:
            raise InvalidInput(f"not an mlx-vlm LoRA weight of the language model: {key!r}")
        name = (
            f"base_model.model.model.language_model.layers.{match['layer']}."
            f"{match['module']}.lora_{match['ab'].upper()}.weight"
        )
        tensors[name] = tensor.T.contiguous()
    return tensors


def _module_order(name: str) -> tuple[int, str]:
    layer = int(name.split(".")[3])
    return layer, name


def write_base(source: Path, out: Path) -> None:
    """`source`, a transformers Qwen-VL checkpoint, as a folder mlx-vlm's `load` reads:
    the converted config, the other files hard-linked (or copied) beside it."""
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    converted = convert_config(config)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)  # a checkpoint is never rewritten in place: share the bytes
        except OSError:  # another file system, or links not allowed here
            shutil.copy2(src, dst)

    shutil.copytree(
        source, out, copy_function=link_or_copy, ignore=shutil.ignore_patterns("config.json")
    )
    (out / "config.json").write_text(
        json.dumps(converted, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _local_base(base: str | None) -> Path | None:
    if not base:
        return None
    path = Path(base).expanduser()
    return path.absolute() if (path / "config.json").is_file() else None


def export_mlx(
    adapter_dir: Path,
    out_dir: Path,
    *,
    base_model: str | None = None,
    include_base: bool = True,
    force: bool = False,
) -> Path:
    """Write the mlx-vlm layout of a PEFT adapter to `out_dir` (complete or not at all),
    with `base/`, the base checkpoint mlx-vlm loads, when the base is a local folder and
    `include_base`. `base_model` overrides the base the adapter records."""
    from safetensors.torch import load_file, save_file

    adapter_dir = Path(adapter_dir)
    meta = adapter_format.verify_dir(adapter_dir, require_meta=False)
    out_dir = prepare_out_dir(out_dir, force, EXPORT_INFO, "an mlx export")
    peft_config = adapter_format.read_peft_config(adapter_dir)
    tensors = load_file(str(adapter_dir / adapter_format.ADAPTER_WEIGHTS), device="cpu")
    weights, config = peft_to_mlx(tensors, peft_config)
    base = base_model or meta.base_model or peft_config.get("base_model_name_or_path")
    local_base = _local_base(base) if include_base else None

    with staged_output(out_dir) as staging:
        save_file(weights, str(staging / MLX_WEIGHTS), metadata={"format": "mlx"})
        (staging / MLX_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if local_base is not None:
            write_base(local_base, staging / BASE_DIR)
        info = {
            "format": "mondrian-mlx-export/1",
            "adapter": meta.ref,
            "adapter_path": str(adapter_dir),
            "base_model": base,
            "base_fingerprint": meta.base_fingerprint,
            "prompt_version": meta.prompt_version,
            "facts_version": meta.facts_version,
            "mlx_vlm_layout": "0.7.10",
            # What to hand mlx-vlm, relative to this folder (or the Hub id to load).
            "mlx_vlm_model": BASE_DIR if local_base is not None else base,
            "mlx_vlm_adapter_path": ".",
            "created_at": utcnow(),
        }
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir
