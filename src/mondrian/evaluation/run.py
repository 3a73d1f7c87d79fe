"""`mondrian evaluate`: the base model against an advisor's adapter on a dataset split.

Reads top to bottom: set up (advisor, adapter, dataset, model), work (every example through
every variant, one request at a time so latencies are honest), save (JSON that describes
itself, and an HTML report). Gates are checked by the caller on the returned metrics.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mondrian
from mondrian.advisors import Advisor
from mondrian.backends.protocol import Backend, GenerationRequest
from mondrian.config import Settings
from mondrian.errors import InvalidInput, NotFound
from mondrian.evaluation.metrics import Sample, VariantMetrics, variant_metrics, write_eval_report
from mondrian.facts.checks import run_checks
from mondrian.facts.measure import measure
from mondrian.images import Photo, read_image_file
from mondrian.prompts import PROMPT_VERSION, Prompt
from mondrian.schema import SCHEMA_VERSION, Critique, Fact
from mondrian.storage import adapters as adapter_store
from mondrian.storage.advisors import require_advisor
from mondrian.storage.db import Database

ProgressCallback = Callable[[str, int, int], None]  # (variant, done, total)


@dataclass
class Example:
    prompt: Prompt
    reference: Critique
    image: str
    # The photo's facts: those its dataset row recorded (the ones its prompt's "Measured:"
    # block was written from), else measured here; the checks of every answer read them.
    facts: list[Fact] = field(default_factory=list)


@dataclass
class Evaluation:
    advisor_id: str
    adapter: str | None
    split: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    variants: list[VariantMetrics]
    per_example: list[dict[str, Any]]
    created_at: str
    mondrian_version: str
    prompt_version: str
    schema_version: str
    config: dict[str, Any]

    def variant(self, name: str) -> VariantMetrics:
        return next(v for v in self.variants if v.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# A split's file names, newest first: `validation.jsonl` since dataset format 2 (the name
# `datasets` and mlx-vlm read), `val.jsonl` before.
_SPLIT_FILES = {"train": ("train.jsonl",), "validation": ("validation.jsonl", "val.jsonl")}


def _split_path(dataset_dir: Path, split: str) -> Path:
    """The split's file; a name other than train/validation is a `<name>.jsonl` written
    beside them (the demo's quick subset of the training split)."""
    name = "validation" if split in ("val", "valid") else split
    if name not in _SPLIT_FILES:
        extra = dataset_dir / f"{name}.jsonl"
        if extra.is_file() and extra.parent == dataset_dir:
            return extra
        raise InvalidInput(f"unknown split {split!r} (train or validation)")
    candidates = [dataset_dir / file for file in _SPLIT_FILES[name]]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _image_path(dataset_dir: Path, path: str) -> Path:
    # Absolute since dataset format 2; relative to the folder before. A data set moved
    # since it was built keeps its images in images/.
    p = Path(path)
    if not p.is_absolute():
        return dataset_dir / p
    moved = dataset_dir / "images" / p.name
    return moved if not p.exists() and moved.exists() else p


def load_examples(dataset_dir: Path, split: str) -> tuple[list[Example], dict[str, Any]]:
    """A split of a dataset written by `mondrian dataset build`, with the dataset's identity."""
    path = _split_path(dataset_dir, split)
    if not path.is_file():
        raise NotFound(f"no {split} split in {dataset_dir} ({path.name} missing)")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = {m["role"]: m for m in row["messages"]}
            system = _text(messages["system"])
            user = _text(messages["user"])
            reference = Critique.model_validate_json(_text(messages["assistant"]))
            image_path = _image_path(dataset_dir, row["images"][0])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{path.name} line {number}: not a dataset row ({exc})") from None
        photo = read_image_file(image_path)
        prompt = Prompt(system, user, [photo.image])
        facts = _facts_of(row, photo, f"{path.name} line {number}")
        examples.append(Example(prompt, reference, row["images"][0], facts))
    manifest_file = dataset_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    identity = {
        "path": str(dataset_dir),
        "split": split,
        "examples": len(examples),
        "split_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "manifest_sha256": manifest.get("sha256") or manifest.get("data_sha256"),
    }
    return examples, identity


def _facts_of(row: dict[str, Any], photo: Photo, where: str) -> list[Fact]:
    """The facts the row recorded (training/dataset.py writes them since prompt version 2),
    or the photo measured now for an older data set."""
    recorded = (row.get("mondrian") or {}).get("facts")
    if recorded is None:
        return measure(photo)
    try:
        return [Fact.model_validate(fact) for fact in recorded]
    except ValueError as exc:
        raise InvalidInput(f"{where}: not a list of facts ({exc})") from None


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def resolve_adapter(db: Database, advisor_id: str, ref: str | None) -> adapter_store.Adapter:
    """`ansel@v2`, `v2`, `2` or None (the active version)."""
    with db.read() as conn:
        if ref is None:
            adapter = adapter_store.get_active(conn, advisor_id)
            if adapter is None:
                raise NotFound(f"advisor {advisor_id} has no active adapter; pass --adapter")
            return adapter
        if "@" in ref:
            owner, version = adapter_store.parse_adapter_ref(ref)
            if owner != advisor_id:
                raise InvalidInput(f"adapter {ref} belongs to {owner}, not {advisor_id}")
        else:
            version = int(ref.removeprefix("v")) if ref.removeprefix("v").isdigit() else -1
            if version < 1:
                raise InvalidInput(f"not an adapter version: {ref!r} (use advisor@vN)")
        return adapter_store.require_adapter(conn, advisor_id, version)


def _dataset_of(adapter: adapter_store.Adapter) -> Path | None:
    meta = adapter.metadata or {}
    dataset = meta.get("dataset") or {}
    path = dataset.get("path") if isinstance(dataset, dict) else None
    return Path(path) if path else None


def _run_variant(
    backend: Backend,
    name: str,
    adapter: str | None,
    examples: list[Example],
    on_progress: ProgressCallback | None,
) -> list[Sample]:
    samples = []
    for index, example in enumerate(examples):
        started = time.perf_counter()
        (generation,) = backend.generate(
            [GenerationRequest(prompt=example.prompt, adapter=adapter)]
        )
        critique = generation.critique
        samples.append(
            Sample(
                reference=example.reference,
                critique=critique,
                stopped=generation.stopped,
                latency_s=time.perf_counter() - started,
                new_tokens=generation.new_tokens,
                checks=run_checks(critique, example.facts) if critique else [],
            )
        )
        if on_progress:
            on_progress(name, index + 1, len(examples))
    return samples


def evaluate(
    settings: Settings,
    db: Database,
    backend: Backend,
    advisor_id: str,
    *,
    adapter_ref: str | None = None,
    dataset_dir: Path | None = None,
    split: str = "validation",
    out_dir: Path | None = None,
    merged: bool = False,
    on_progress: ProgressCallback | None = None,
) -> Evaluation:
    # --- setup --------------------------------------------------------------------------
    with db.read() as conn:
        advisor: Advisor = require_advisor(conn, advisor_id)
    adapter = resolve_adapter(db, advisor_id, adapter_ref)
    dataset_dir = dataset_dir or _dataset_of(adapter)
    if dataset_dir is None:
        raise InvalidInput(f"adapter {adapter.ref} records no dataset; pass --dataset DIR")
    examples, dataset = load_examples(Path(dataset_dir), split)
    if not examples:
        raise InvalidInput(f"the {split} split of {dataset_dir} is empty")
    backend.load_adapter(adapter.ref, Path(adapter.path))

    # --- work ---------------------------------------------------------------------------
    samples = {
        "base": _run_variant(backend, "base", None, examples, on_progress),
        "adapter": _run_variant(backend, "adapter", adapter.ref, examples, on_progress),
    }
    if merged:
        backend.merge_adapter(adapter.ref)  # Unavailable where the backend cannot
        samples["merged"] = _run_variant(backend, "merged", None, examples, on_progress)
    variants = [variant_metrics(name, s, advisor.weights) for name, s in samples.items()]
    per_example = [
        {
            "image": example.image,
            "reference": example.reference.dimensions.scores(),
            **{
                name: (s[i].critique.dimensions.scores() if s[i].critique else None)
                for name, s in samples.items()
            },
        }
        for i, example in enumerate(examples)
    ]

    # --- save ---------------------------------------------------------------------------
    evaluation = Evaluation(
        advisor_id=advisor_id,
        adapter=adapter.ref,
        split=split,
        dataset=dataset,
        model={**backend.info(), "adapter_path": str(adapter.path)},
        variants=variants,
        per_example=per_example,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        mondrian_version=mondrian.__version__,
        prompt_version=PROMPT_VERSION,
        schema_version=SCHEMA_VERSION,
        config={
            "max_pixels": settings.max_pixels,
            "max_text_chars": settings.max_text_chars,
            "merged": merged,
            "python": platform.python_version(),
        },
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(
            json.dumps(evaluation.to_json(), indent=2), encoding="utf-8"
        )
        write_eval_report(evaluation.to_json(), advisor.name, out_dir / "evaluation.html")
    return evaluation
