"""The adapter directory format, one home for every reader and writer.

An adapter version is a PEFT LoRA directory (`adapter_config.json`,
`adapter_model.safetensors`) plus Mondrian's own description, `mondrian_adapter.json`
(`AdapterMeta`): what it was trained on, how, and how well; the registry adds its name
(`advisor@vN`). Both backends (backends/transformers/backend.py, backends/mlx/backend.py),
training, the registry and the exports (training/merge.py, training/export_mlx.py) read
and check it through this module, so "is this adapter complete" and "was it trained on
this base model" have one answer each. No framework is imported: the weights' header is
read as bytes.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mondrian import __version__
from mondrian.errors import InvalidInput, NotFound, describe_validation
from mondrian.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"  # PEFT's
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's; the only weights format loaded
ADAPTER_META = "mondrian_adapter.json"  # Mondrian's: AdapterMeta
LOSS_CURVE = "loss_curve.svg"  # written by training beside the weights, for people
META_FORMAT = "mondrian-adapter/1"
PEFT_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
REQUIRED_FILES = (*PEFT_FILES, ADAPTER_META)


class AdapterMeta(BaseModel):
    """`mondrian_adapter.json`. Every field is optional, so an adapter trained elsewhere (no
    file, or a partial one) still loads; keys not named here are kept as written."""

    model_config = ConfigDict(extra="allow")

    format: str | None = Field(default=None, description=f"{META_FORMAT!r} when written here.")
    advisor_id: str | None = None
    version: int | None = None
    ref: str | None = Field(default=None, description="`advisor@vN`, set by the registry.")
    base_model: str | None = Field(default=None, description="Hub id or path trained on.")
    base_fingerprint: str | None = Field(
        default=None, description="backends/decoding/fingerprint.py of the base model's weights."
    )
    base_revision: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    prompt_version: str | None = None
    facts_version: str | None = Field(
        default=None,
        description="facts/measure.py's FACTS_VERSION of the data set's measured facts, from "
        "its manifest; absent (unknown) on adapters trained before facts were recorded.",
    )
    schema_version: str | None = None
    package_version: str | None = None
    training: dict[str, Any] = Field(
        default_factory=dict, description="How it was trained: processes, device, versions."
    )
    created_at: str | None = None

    @classmethod
    def trained(
        cls,
        *,
        base_fingerprint: str,
        base_revision: str | None,
        hyperparameters: dict[str, Any],
        dataset: dict[str, Any],
        metrics: dict[str, Any],
        prompt_version: str,
        facts_version: str | None,
        training: dict[str, Any],
        created_at: str,
    ) -> AdapterMeta:
        """What a training run records (training/publish.py, for either trainer); this
        package's schema and version are filled in here. The registry adds the name."""
        recorded = {} if facts_version is None else {"facts_version": facts_version}
        return cls(
            base_fingerprint=base_fingerprint,
            base_revision=base_revision,
            hyperparameters=hyperparameters,
            dataset=dataset,
            prompt_version=prompt_version,
            **recorded,  # left unset, so not written, when the data set recorded none
            schema_version=SCHEMA_VERSION,
            package_version=__version__,
            metrics=metrics,
            training=training,
            created_at=created_at,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON object as written (and as the registry stores it): only the keys set."""
        return self.model_dump(mode="json", exclude_unset=True)


def parse_meta(data: object, where: Path | str) -> AdapterMeta:
    try:
        return AdapterMeta.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{where}: {describe_validation(exc)}") from None


def read_meta(path: Path) -> AdapterMeta | None:
    """The adapter directory's `mondrian_adapter.json`, or None when it has none."""
    meta_file = Path(path) / ADAPTER_META
    if not meta_file.is_file():
        return None
    try:
        data = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError:
        raise InvalidInput(f"{meta_file} is not valid JSON") from None
    return parse_meta(data, meta_file)


def write_meta(path: Path, meta: AdapterMeta) -> None:
    """Write (and fsync) `mondrian_adapter.json` into the adapter directory `path`."""
    with (Path(path) / ADAPTER_META).open("w", encoding="utf-8") as fh:
        json.dump(meta.as_dict(), fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_peft_config(path: Path) -> dict[str, Any]:
    config_file = Path(path) / ADAPTER_CONFIG
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError:
        raise InvalidInput(f"{config_file} is not valid JSON") from None


def check_files(path: Path, name: str | None = None) -> None:
    """What a backend needs before loading: NotFound without an adapter config,
    InvalidInput without safetensors weights (pickled `.bin` weights are never loaded)."""
    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        raise NotFound(f"no adapter at {path} ({ADAPTER_CONFIG} missing)")
    if not (path / ADAPTER_WEIGHTS).is_file():
        which = f"adapter {name}" if name else "the adapter"
        raise InvalidInput(
            f"{which} at {path} has no {ADAPTER_WEIGHTS}; only safetensors adapters are loaded"
        )


def check_base(meta: AdapterMeta | None, fingerprint: str, *, adapter: str, loaded: str, fix: str):
    """Refuse an adapter whose recorded base fingerprint is not `fingerprint`.

    `adapter` names the adapter, `loaded` the model at hand and `fix` what to do, in the
    caller's words (a backend: "load the matching base model"; a merge: "pass the
    matching --model"). An adapter without a recorded fingerprint passes, with a warning
    when it has no metadata at all."""
    if meta is None:
        log.warning("%s has no %s; its base model cannot be checked", adapter, ADAPTER_META)
        return
    recorded = meta.base_fingerprint
    if recorded and recorded != fingerprint:
        raise InvalidInput(
            f"{adapter} was trained on base model {meta.base_model!r} "
            f"(fingerprint {recorded}) but {loaded}; {fix}"
        )


def check_loadable(name: str, path: Path, fingerprint: str, model_id: str) -> None:
    """A backend's check before loading adapter `name` from `path` onto `model_id`."""
    check_files(path, name)
    check_base(
        read_meta(path),
        fingerprint,
        adapter=f"adapter {name}",
        loaded=f"the loaded model is {model_id!r} (fingerprint {fingerprint})",
        fix="load the matching base model",
    )


_facts_noted: set[str] = set()  # refs already noted in this process


def note_facts_version(ref: str, metadata: dict[str, Any], current: str) -> str | None:
    """Say once per process, as a warning, that adapter `ref` learned from facts of another
    version than the `current` one serving measures (facts/measure.py's FACTS_VERSION is
    passed in: this module sits below facts/). Never refuses: the critique still works,
    the facts in its prompt may read differently from those it was trained on. An adapter
    that records none is unknown, noted at info level. Returns the note, or None."""
    if ref in _facts_noted:
        return None
    _facts_noted.add(ref)
    recorded = metadata.get("facts_version")
    if recorded is None:
        note = f"adapter {ref} records no facts_version (unknown: trained before it was recorded)"
        log.info(note)
        return note
    if str(recorded) == current:
        return None
    note = (
        f"adapter {ref} was trained on facts version {recorded}; this Mondrian measures "
        f"version {current}: its prompts' Measured block may read differently (retrain to match)"
    )
    log.warning(note)
    return note


def safetensors_names(path: Path) -> list[str]:
    """Tensor names from a safetensors header, without loading a framework."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise InvalidInput(f"{path} is not a safetensors file (truncated)")
        (size,) = struct.unpack("<Q", head)
        if size > 100 * 1024 * 1024:
            raise InvalidInput(f"{path} has an implausible safetensors header")
        header = fh.read(size)
        if len(header) != size:
            raise InvalidInput(f"{path} is truncated")
        end = fh.seek(0, os.SEEK_END)
    try:
        table = json.loads(header)
    except ValueError:
        raise InvalidInput(f"{path} has a corrupt safetensors header") from None
    data_end = max(
        (v["data_offsets"][1] for k, v in table.items() if k != "__metadata__"), default=0
    )
    if 8 + size + data_end > end:
        raise InvalidInput(f"{path} is truncated (tensor data missing)")
    return [k for k in table if k != "__metadata__"]


def verify_dir(path: Path, *, require_meta: bool = True) -> AdapterMeta:
    """Check that an adapter directory is complete (files present, a LoRA config, LoRA
    weights not truncated); return its metadata (empty when not required and absent).
    Raises `NotFound` or `InvalidInput` naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise NotFound(f"adapter directory {path} does not exist")
    needed = REQUIRED_FILES if require_meta else PEFT_FILES
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise InvalidInput(f"adapter directory {path} is incomplete: {', '.join(missing)} missing")
    config = read_peft_config(path)
    if config.get("peft_type") != "LORA":
        raise InvalidInput(f"{path} is not a LoRA adapter (peft_type {config.get('peft_type')!r})")
    names = safetensors_names(path / ADAPTER_WEIGHTS)
    if not any(".lora_A." in n for n in names):
        raise InvalidInput(f"{path / ADAPTER_WEIGHTS} holds no LoRA weights")
    return read_meta(path) or AdapterMeta()
