"""PEFT LoRA adapters on an mlx-vlm model: read on the fly, resident side by side.

The registry keeps one adapter format, PEFT's (docs/ecosystem.md). A PEFT LoRA module holds
`lora_A.weight` (r x in) and `lora_B.weight` (out x r) and adds
`lora_B(lora_A(x)) * alpha / r` to the base layer's output (`alpha / sqrt(r)` with
rsLoRA). mlx-vlm's LoRA layers hold the transposes, `lora_a` (in x r) and `lora_b`
(r x out), with the scale as a number: the conversion is transpose, rename, scale
(tests/backends/test_mlx_backend.py: a converted adapter reproduced PEFT's answers in mlx-vlm).

For serving, `MultiLoRALinear` wraps each targeted linear layer once and keeps every
loaded adapter's weights beside it; one shared `AdapterBank.active` picks the adapter
for the next forward pass, so switching is one assignment. As in PEFT, the LoRA path is
computed in float32 and added to the base output before rounding back to the model's
dtype. Options that change PEFT's arithmetic and are not reproduced here (DoRA, LoRA
biases, per-module alphas, ...) are refused rather than approximated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mondrian.adapter_format import ADAPTER_WEIGHTS, check_files, read_peft_config
from mondrian.errors import InvalidInput

# "base_model.model.<prefix>layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>.weight"; the
# prefix differs between transformers versions (model., model.language_model., ...).
_KEY = re.compile(
    r"^base_model\.model\.(?P<prefix>(?:[A-Za-z_]+\.)*)layers\.(?P<layer>\d+)\."
    r"(?P<block>self_attn|mlp)\.(?P<proj>[A-Za-z0-9_]+)\.lora_(?P<ab>[AB])\.weight$"
)
# PEFT options whose arithmetic is not the plain LoRA reproduced here: refused when set.
_UNSUPPORTED = (
    "use_dora",
    "lora_bias",
    "fan_in_fan_out",
    "alpha_pattern",
    "layer_replication",
    "modules_to_save",
    "trainable_token_indices",
    "target_parameters",
    "alora_invocation_tokens",
    "use_qalora",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "velora_config",
    "monteclora_config",
)


@dataclass(frozen=True)
class LoraModule:
    """One targeted layer's LoRA weights in mlx-vlm's layout."""

    a: mx.array  # (in, r) = PEFT lora_A.weight transposed
    b: mx.array  # (r, out) = PEFT lora_B.weight transposed
    scale: float


def mlx_module_path(layer: int, block: str, proj: str) -> str:
    """Where a language-model linear layer lives in mlx-vlm's Qwen-VL models."""
    return f"language_model.model.layers.{layer}.{block}.{proj}"


def peft_scale(config: dict[str, Any], rank: int) -> float:
    """PEFT's scaling for a module of `rank`: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    alpha = config.get("lora_alpha", 8)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def read_peft_adapter(path: Path) -> dict[str, LoraModule]:
    """A PEFT LoRA adapter directory as {mlx module path: LoraModule}, float32 weights."""
    path = Path(path)
    check_files(path)
    config = read_peft_config(path)
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidInput(f"the adapter at {path} is {config.get('peft_type')}, not LoRA")
    if config.get("bias", "none") != "none":
        raise InvalidInput(f"the adapter at {path} trains biases (bias={config['bias']!r})")
    options = [key for key in _UNSUPPORTED if config.get(key)]
    if options:
        raise InvalidInput(
            f"the adapter at {path} uses PEFT options the MLX backend does not reproduce: "
            + ", ".join(options)
        )

    pairs: dict[str, dict[str, mx.array]] = {}
    foreign: list[str] = []
    for key, value in mx.load(str(path / ADAPTER_WEIGHTS)).items():
        match = _KEY.match(key)
        if match is None or "vis" in match["prefix"]:
            foreign.append(key)
            continue
        target = mlx_module_path(int(match["layer"]), match["block"], match["proj"])
        pairs.setdefault(target, {})[match["ab"]] = value.astype(mx.float32)
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise InvalidInput(
            f"the adapter at {path} has weights outside the language model's linear "
            f"layers, which the MLX backend does not load: {shown}"
        )
    if not pairs:
        raise InvalidInput(f"the adapter at {path} holds no LoRA weights")

    modules: dict[str, LoraModule] = {}
    for target, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise InvalidInput(f"the adapter at {path} lacks lora_A or lora_B for {target}")
        a, b = ab["A"], ab["B"]  # (r, in), (out, r)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise InvalidInput(f"the adapter at {path} has mismatched LoRA shapes at {target}")
        modules[target] = LoraModule(a=a.T, b=b.T, scale=peft_scale(config, a.shape[0]))
    return modules


@dataclass
class AdapterBank:
    """Which adapter the wrapped layers apply (None: the base model)."""

    active: str | None = None
    names: list[str] = field(default_factory=list)


class _Store:
    # A plain object, not a dict: mlx.nn.Module would treat a dict attribute as
    # parameters, and the adapters must stay out of the base model's parameters.
    def __init__(self) -> None:
        self.modules: dict[str, LoraModule] = {}


class MultiLoRALinear(nn.Module):
    """A linear layer plus any number of resident LoRA adapters, one applied at a time."""

    def __init__(self, base: nn.Module, bank: AdapterBank) -> None:
        super().__init__()
        self.base = base
        self._bank = bank
        self._store = _Store()

    def add(self, name: str, module: LoraModule) -> None:
        self._store.modules[name] = module

    def remove(self, name: str) -> None:
        self._store.modules.pop(name, None)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base(x)
        lora = self._store.modules.get(self._bank.active) if self._bank.active else None
        if lora is None:
            return y
        z = (x.astype(mx.float32) @ lora.a) @ lora.b
        return (y.astype(mx.float32) + z * lora.scale).astype(y.dtype)


def _child(parent: Any, part: str) -> Any:
    return parent[int(part)] if isinstance(parent, list) else getattr(parent, part)


def _wrapped(model: nn.Module, path: str, bank: AdapterBank) -> MultiLoRALinear:
    *parents, last = path.split(".")
    owner: Any = model
    for part in parents:
        owner = _child(owner, part)
    layer = _child(owner, last)
    if isinstance(layer, MultiLoRALinear):
        return layer
    if not isinstance(layer, nn.Linear | nn.QuantizedLinear):
        raise InvalidInput(f"{path} is a {type(layer).__name__}, not a linear layer")
    wrapper = MultiLoRALinear(layer, bank)
    if isinstance(owner, list):
        owner[int(last)] = wrapper
    else:
        setattr(owner, last, wrapper)
    return wrapper


def _dims(layer: nn.Module) -> tuple[int, int]:
    """(in, out) of a linear layer, quantized or not."""
    out_dims, in_dims = layer.weight.shape
    if isinstance(layer, nn.QuantizedLinear):
        in_dims = in_dims * 32 // layer.bits
    return in_dims, out_dims


def attach(model: nn.Module, name: str, modules: dict[str, LoraModule], bank: AdapterBank) -> None:
    """Make an adapter resident on `model` (layers are checked before anything changes)."""
    for path, lora in modules.items():
        owner: Any = model
        try:
            for part in path.split("."):
                owner = _child(owner, part)
        except (AttributeError, IndexError, KeyError):
            raise InvalidInput(f"adapter {name} targets {path}, which this model lacks") from None
        base = owner.base if isinstance(owner, MultiLoRALinear) else owner
        if _dims(base) != (lora.a.shape[0], lora.b.shape[1]):
            raise InvalidInput(
                f"adapter {name} does not fit {path}: LoRA {lora.a.shape[0]}->"
                f"{lora.b.shape[1]}, layer {_dims(base)[0]}->{_dims(base)[1]}"
            )
    for path, lora in modules.items():
        _wrapped(model, path, bank).add(name, lora)
    mx.eval([[m.a, m.b] for m in modules.values()])
    bank.names.append(name)


def detach(model: nn.Module, name: str, bank: AdapterBank) -> None:
    for _, module in model.named_modules():
        if isinstance(module, MultiLoRALinear):
            module.remove(name)
    bank.names.remove(name)
    if bank.active == name:
        bank.active = None
