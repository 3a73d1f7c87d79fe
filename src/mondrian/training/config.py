"""The training run's settings: one typed model, every field with a default and one line
of help. A TOML file sets any of them; CLI flags override the file. The fields are the one
source of names, defaults and help: `mondrian train` makes a flag of each
(src/mondrian/cli/training_cmd.py), and `ConfigError` names fields so that the CLI can name
its flags instead. The shipped files live inside the package
(src/mondrian/configs/train/*.toml, so they are in the wheel); `pick_config` chooses the one
that fits a model.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mondrian.errors import InvalidInput, validation_pairs

# LoRA goes on the language model's decoder linears only (servable by vLLM: docs/ecosystem.md).
# The vision tower has gate/up/down projections too, so a plain list of names would reach
# it (tests/strategies/test_lora.py); this regex is anchored on the LM's layer path.
# transformers 5 names it `model.language_model.layers.N`; older checkpoints `model.layers.N`.
LM_TARGET_REGEX = (
    r"^(?:model\.language_model|model|language_model\.model)\.layers\.\d+\."
    r"(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)$"
)


class ConfigError(InvalidInput):
    """Training settings that do not validate.

    `problems` holds (field, message) pairs, the field a `TrainConfig` name ("lr") or
    "config" for the whole; `source` is the file the values came from, None for values
    given in code or on the command line. `describe()` words it with other names for the
    fields: the CLI says `--lr` where the library says `lr`.
    """

    def __init__(self, problems: list[tuple[str, str]], *, source: Path | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.describe())

    def describe(self, name: Callable[[str], str] = str) -> str:
        where = f"{self.source}: " if self.source is not None else ""
        parts = "; ".join(f"{name(field)}: {message}" for field, message in self.problems)
        return f"{where}invalid training config: {parts}"


class TrainConfig(BaseModel):
    """Hyperparameters and run settings of one LoRA training run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | None = Field(
        default=None, description="Base model hub id or path (default: $MONDRIAN_MODEL)."
    )
    rank: int = Field(default=16, ge=1, le=512, description="LoRA rank r.")
    alpha: float = Field(default=32.0, gt=0, description="LoRA alpha; the update scale is alpha/r.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    epochs: int = Field(default=3, ge=1, description="Passes over the training split.")
    batch_size: int = Field(default=1, ge=1, description="Examples per step per process.")
    grad_accum: int = Field(default=1, ge=1, description="Steps whose gradients add up per update.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping (L2 norm).")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="Learning-rate decay after warm-up."
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0, lt=1, description="Fraction of the updates spent warming up."
    )
    max_pixels: int = Field(
        default=1280 * 28 * 28,
        gt=0,
        description="Pixel budget per image; serve with the same value (image tokens scale "
        "with it and are never truncated).",
    )
    max_seq_len: int = Field(
        default=8192,
        ge=64,
        description="Longest example in tokens; longer ones are an error, never truncated.",
    )
    seed: int = Field(default=0, ge=0, description="Seed for data order, dropout and LoRA init.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Base weights' dtype; auto: bf16 on CUDA, else float32."
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        default="auto", description="cuda, mps, cpu or auto (ignored under DDP)."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward to save memory."
    )
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")
    cpu_threads: int | None = Field(
        default=None, ge=1, description="torch threads on CPU during the run (unset: torch's)."
    )
    engine: Literal["auto", "fast", "stock"] = Field(
        default="auto",
        description="fast: the serving engine's fused LM (training/fast_engine.py); stock: "
        "transformers' forward; auto: fast on CUDA, else stock (fast on CPU works, slowly).",
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="torch.compile the fast engine's layer halves (forward and backward; "
        "eager again, with a warning, if compiling fails); auto: on with CUDA, off on CPU.",
    )
    compile_unit: Literal["halves", "layer"] = Field(
        default="halves",
        description="What one compiled graph covers: a layer's two halves around attention, "
        "or the whole layer (fewer calls; the halves again, with a warning, if it fails).",
    )
    compile_launch: Literal["cpp", "python"] = Field(
        default="cpp",
        description="How the compiled graphs launch their kernels: inductor's C++ wrapper "
        "(less CPU a launch; Python's again, with a warning, if it fails) or Python one.",
    )

    # --- derived -------------------------------------------------------------------------

    def hyperparameters(self) -> dict[str, Any]:
        """What an adapter records about how it was trained."""
        data = self.model_dump(exclude={"device", "num_workers", "cpu_threads"})
        data["target_modules"] = LM_TARGET_REGEX
        return data

    def fingerprint(self) -> str:
        """Hash of everything that shapes the result (a resumed run must match it)."""
        # Not `engine` nor `compile` (nor its unit or launch): both train the same PEFT
        # weights with the same checkpoints, so a run resumes under either, and runs from
        # before the fields keep their folders.
        data = self.model_dump(
            exclude={
                "device",
                "num_workers",
                "cpu_threads",
                "epochs",
                "engine",
                "compile",
                "compile_unit",
                "compile_launch",
            }
        )
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def merged(self, **overrides: Any) -> TrainConfig:
        """A copy with the non-None overrides applied (CLI flags over the file)."""
        values = {k: v for k, v in overrides.items() if v is not None}
        try:
            return TrainConfig.model_validate({**self.model_dump(), **values})
        except ValidationError as exc:
            raise ConfigError(_problems(exc)) from None


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """The defaults, then the TOML file (top level or a [train] table), then overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no such config file: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
        if set(data) == {"train"} and isinstance(data["train"], dict):
            data = data["train"]
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source=path) from None
    return config.merged(**overrides)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    return validation_pairs(exc, root="config")


# --- shipped configs ---------------------------------------------------------------------

SHIPPED_DIR = ("configs", "train")
TINY_CONFIG = "tiny"
# Which shipped config fits which real model: (config.json model_type, LM hidden size), and
# for a hub id that is not a local folder, a pattern on its name. Deciding reads at most a
# config.json: never weights, never the network.
MODEL_FITS: dict[str, tuple[str, int, re.Pattern[str]]] = {
    "qwen2_5_vl_3b": ("qwen2_5_vl", 2048, re.compile(r"qwen2[._]?5-vl-3b", re.IGNORECASE)),
}


def shipped_configs() -> dict[str, Path]:
    """The training configs shipped inside the package, by name (file stem)."""
    root = resources.files("mondrian").joinpath(*SHIPPED_DIR)
    found = {
        entry.name.removesuffix(".toml"): Path(str(entry))
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    }
    return dict(sorted(found.items()))


def pick_config(model: str | None) -> Path:
    """The shipped config that fits `model` (None: the demo's tiny checkpoint).

    A tiny checkpoint folder gets the tiny config; a real one is matched on its config.json
    or, for a hub id, on its name. No fit is an error that lists what is shipped.
    """
    configs = shipped_configs()
    name = TINY_CONFIG if model is None else _fitting_name(model)
    if name is None or name not in configs:
        shipped = ", ".join(f"{n} ({_fit_help(n)})" for n in configs)
        raise InvalidInput(
            f"no shipped training config fits the model {model!r}. Shipped: {shipped}. "
            "Pass --config FILE with settings for this model (start from one of those files)."
        )
    return configs[name]


def _fitting_name(model: str) -> str | None:
    folder = Path(model).expanduser()
    if folder.is_dir():
        return _fit_folder(folder)
    for name, (_, _, pattern) in MODEL_FITS.items():
        if pattern.search(model):
            return name
    return None


def _fit_folder(folder: Path) -> str | None:
    from mondrian.tiny.checkpoint import read_info  # light: no torch at import

    if read_info(folder) is not None:
        return TINY_CONFIG
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    model_type = config.get("model_type")
    # transformers 5 writes the LM's size under text_config; hub files have it at the top.
    hidden = (config.get("text_config") or {}).get("hidden_size") or config.get("hidden_size")
    for name, (want_type, want_hidden, _) in MODEL_FITS.items():
        if model_type == want_type and hidden == want_hidden:
            return name
    return None


def _fit_help(name: str) -> str:
    if name == TINY_CONFIG:
        return "tiny checkpoints from `mondrian models make-tiny`"
    if name in MODEL_FITS:
        model_type, hidden, _ = MODEL_FITS[name]
        return f"{model_type} with hidden size {hidden}"
    return "no automatic match"
