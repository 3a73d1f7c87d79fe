"""Training data for an advisor's LoRA: (image, the advisor's prompt, target critique JSON).

Targets come from the advisor's profiles (`curated` and `model` sources) and, on request,
from reviewed jobs (a person's corrected critique of a past analysis). Each target must be
a valid `Critique` AND fit the generation bounds (printable ASCII without '"' or '\\',
bounded lengths, at most N list items): the constrained model can only ever write such
text, so a target outside them teaches an answer the grammar forbids. Invalid targets are
reported (manifest and stderr), never kept.

The target text is exactly what the constrained model writes: compact JSON of the
generated fields, keys in schema order. The prompt is exactly the one `--mode lora`
sends (`critique_prompt(advisor, image)` without context).

The split is by image: an image, and every augmentation of it, sits on one side only.
Augmentations are made for the training split only; validation loss is measured on the
original photos. Output (the messages + images form TRL and mlx-vlm read):

    DIR/train.jsonl, DIR/validation.jsonl   one example per line
    DIR/images/<hash>[-aug<k>].jpg          upright RGB JPEGs
    DIR/manifest.json                       advisor, sizes, hashes, versions, rejects

The split names are the ones the ecosystem's loaders look for: `datasets.load_dataset(DIR)`
maps `train.jsonl`/`validation.jsonl` to the splits "train" and "validation", and
mlx-vlm's folder loader (`mlx_vlm/trainer/datasets/loading.py`) reads `<split>.jsonl` for
"train" and "validation". Image paths in the JSONL are absolute: `datasets` hands the
strings on as they are and TRL's collator opens them from the current working directory,
so a path relative to DIR works from DIR only. The hashes in the manifest are of the
content with the paths written relative to DIR (`images/<name>`), so the same data built
into two folders has the same `data_sha256`, and a data set moved elsewhere still reads
(`load_split` finds its images under DIR/images). docs/ecosystem.md has the TRL recipe.

Format 1 data sets (`val.jsonl`, relative paths) still read: `read_manifest` and
`load_split` take the split name "validation" (or "val") for either.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from mondrian import __version__
from mondrian.advisors.model import Advisor
from mondrian.config import Settings
from mondrian.errors import InvalidInput, MondrianError, NotFound, validation_problems
from mondrian.images import read_image_file
from mondrian.prompts import PROMPT_VERSION, critique_prompt
from mondrian.schema import GENERATION_CHAR_CLASS, SCHEMA_VERSION, Critique, generation_schema
from mondrian.staging import prepare_out_dir, staged_output
from mondrian.storage import reviews
from mondrian.storage.advisors import require_advisor
from mondrian.storage.db import Database, utcnow
from mondrian.storage.images import image_path
from mondrian.training import augment as augmentation

FORMAT = "mondrian-dataset/2"
LEGACY_FORMATS = ("mondrian-dataset/1",)  # val.jsonl, paths relative to the folder
MANIFEST = "manifest.json"
SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}
SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
IMAGES_DIR = "images"
JPEG_QUALITY = 95
SOURCES = ("curated", "model", "review")


# --- targets -----------------------------------------------------------------------------


def target_payload(critique: Critique) -> dict[str, Any]:
    """The generated fields of a critique, keys in the order the grammar writes them."""
    data = critique.model_dump(mode="json")

    def pick(node: dict[str, Any], value: Any) -> Any:
        if node["type"] == "object":
            return {key: pick(sub, value[key]) for key, sub in node["properties"].items()}
        if node["type"] == "array":
            return [pick(node["items"], item) for item in value]
        return value

    return pick(generation_schema(), data)


def target_text(critique: Critique) -> str:
    """The exact text the constrained model writes for this critique."""
    return json.dumps(target_payload(critique), separators=(",", ":"), ensure_ascii=False)


def check_target(
    critique: Critique, max_text_chars: int | None = None, max_list_items: int | None = None
) -> list[str]:
    """Why the constrained model could not write this critique; empty when it could."""
    schema = generation_schema(max_text_chars, max_list_items)
    reasons: list[str] = []

    def walk(node: dict[str, Any], value: Any, where: str) -> None:
        kind = node["type"]
        if kind == "object":
            for key, sub in node["properties"].items():
                walk(sub, value[key], f"{where}.{key}" if where else key)
        elif kind == "array":
            if len(value) > node["maxItems"]:
                reasons.append(f"{where}: {len(value)} items, at most {node['maxItems']}")
            for i, item in enumerate(value):
                walk(node["items"], item, f"{where}[{i}]")
        elif kind == "string":
            if not re.fullmatch(node["pattern"], value):
                reasons.append(f"{where}: {_string_problem(value, node['pattern'])}")
        elif kind == "integer" and not node["minimum"] <= value <= node["maximum"]:
            reasons.append(f"{where}: {value} outside {node['minimum']}..{node['maximum']}")

    walk(schema, target_payload(critique), "")
    return reasons


def _string_problem(value: str, pattern: str) -> str:
    bad = sorted({c for c in value if not re.fullmatch(GENERATION_CHAR_CLASS, c)})
    if bad:
        return "characters the grammar cannot write: " + ", ".join(repr(c) for c in bad)
    limit = sum(int(b or a) for a, b in re.findall(r"\{(\d+)(?:,(\d+))?\}", pattern))
    return f"{len(value)} characters, at most {limit}"


# --- candidates --------------------------------------------------------------------------


@dataclass
class Candidate:
    image_hash: str
    source: str  # curated | model | review
    critique: Critique | None
    origin: str  # where it came from, for reports: 'profile' or 'review <id> of job <id>'
    created_at: str
    reasons: list[str] = field(default_factory=list)


def _parse(raw: str) -> tuple[Critique | None, list[str]]:
    try:
        return Critique.model_validate_json(raw), []
    except ValidationError as exc:
        return None, validation_problems(exc, root="critique")


def collect_candidates(
    conn: sqlite3.Connection, advisor_id: str, include_reviews: bool
) -> list[Candidate]:
    """Every target the advisor has, valid or not, oldest first.

    The rows are read as stored and validated here (not through `list_profiles`, which
    raises on the first bad row): a target the current schema rejects is reported, and
    the rest of the data set is still built.
    """
    found: list[Candidate] = []
    rows = conn.execute(
        "SELECT image_hash, critique, source, updated_at FROM profiles "
        "WHERE advisor_id = ? ORDER BY created_at, image_hash",
        (advisor_id,),
    ).fetchall()
    for row in rows:
        critique, reasons = _parse(row["critique"])
        found.append(
            Candidate(
                row["image_hash"], row["source"], critique, "profile", row["updated_at"], reasons
            )
        )
    if include_reviews:
        for row in reviews.training_rows(conn, advisor_id):  # accepted ones only
            critique, reasons = _parse(row["critique"])
            origin = f"review {row['id']} of job {row['job_id']}"
            found.append(
                Candidate(row["image_hash"], "review", critique, origin, row["created_at"], reasons)
            )
    return found


def choose_targets(candidates: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """One target per image: (chosen, superseded).

    Two different answers to the same input teach the model their average. A person's
    review of an image outranks its profile (it is a correction), and the newest review
    wins among reviews. Only valid candidates compete; invalid ones are reported apart.
    """
    rank = {"review": 2, "curated": 1, "model": 0}
    best: dict[str, Candidate] = {}
    superseded: list[Candidate] = []
    for cand in candidates:
        current = best.get(cand.image_hash)
        if current is None:
            best[cand.image_hash] = cand
            continue
        newer = (rank[cand.source], cand.created_at) >= (rank[current.source], current.created_at)
        if newer:
            superseded.append(current)
            best[cand.image_hash] = cand
        else:
            superseded.append(cand)
    return list(best.values()), superseded


def split_images(hashes: list[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, val) image hashes: seeded, independent of input order.

    With two images or more and a positive fraction, each side gets at least one image.
    """
    if not 0 <= val_fraction < 1:
        raise InvalidInput(f"--val-fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(set(hashes))
    random.Random(f"mondrian-split:{seed}").shuffle(ordered)
    n = len(ordered)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    return set(ordered[n_val:]), set(ordered[:n_val])


# --- building ----------------------------------------------------------------------------


def example_record(
    advisor: Advisor,
    image_rel: str,
    target: str,
    *,
    image_hash: str,
    source: str,
    augmentation_index: int,
) -> dict[str, Any]:
    """One line of train/validation.jsonl: the exact lora-mode prompt plus the answer."""
    # The image itself lives in "images"; the prompt only needs one image slot.
    prompt = critique_prompt(advisor, Image.new("RGB", (1, 1)))
    messages = prompt.messages()
    messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return {
        "messages": messages,
        "images": [image_rel],
        "mondrian": {
            "image_hash": image_hash,
            "source": source,
            "augmentation": augmentation_index,
        },
    }


def build_dataset(
    db: Database,
    settings: Settings,
    advisor_id: str,
    out_dir: Path,
    *,
    val_fraction: float = 0.2,
    augment: int = 0,
    include_reviews: bool = False,
    seed: int = 0,
    max_text_chars: int | None = None,
    max_list_items: int | None = None,
    force: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the advisor's data set to `out_dir` (complete or not at all); its manifest."""
    if augment < 0:
        raise InvalidInput(f"--augment must be 0 or more, got {augment}")
    out_dir = prepare_out_dir(out_dir, force, MANIFEST, "a Mondrian data set")
    with db.read() as conn:
        advisor = require_advisor(conn, advisor_id)
        candidates = collect_candidates(conn, advisor.id, include_reviews)
        paths: dict[str, Path | None] = {}
        for cand in candidates:
            if cand.image_hash not in paths:
                try:
                    paths[cand.image_hash] = image_path(conn, settings.images_dir, cand.image_hash)
                except MondrianError:
                    paths[cand.image_hash] = None

    for cand in candidates:
        if cand.critique is not None:
            cand.reasons.extend(check_target(cand.critique, max_text_chars, max_list_items))
        path = paths[cand.image_hash]
        if path is None or not path.is_file():
            cand.reasons.append("the image file is missing")
    rejected = [c for c in candidates if c.reasons]
    chosen, superseded = choose_targets([c for c in candidates if not c.reasons])
    for cand in rejected:
        message = f"rejected target ({cand.source}, {cand.origin}, image {cand.image_hash[:12]})"
        (warn or (lambda _m: None))(f"{message}: {'; '.join(cand.reasons)}")
    if not chosen:
        raise InvalidInput(
            f"advisor {advisor.id!r} has no valid training targets "
            f"({len(candidates)} found, {len(rejected)} rejected); index its portfolio "
            "(`mondrian index`) or review some analyses first"
        )

    train_hashes, _valid = split_images([c.image_hash for c in chosen], val_fraction, seed)
    with staged_output(out_dir) as staging:
        (staging / IMAGES_DIR).mkdir()
        lines: dict[str, list[str]] = {split: [] for split in SPLIT_FILES}
        images_per_split = dict.fromkeys(SPLIT_FILES, 0)
        for cand in sorted(chosen, key=lambda c: c.image_hash):
            split = "train" if cand.image_hash in train_hashes else "validation"
            path = paths[cand.image_hash]
            assert path is not None and cand.critique is not None
            photo = read_image_file(path, max_bytes=2**40, max_pixels=settings.max_image_pixels)
            text = target_text(cand.critique)
            variants = [(0, photo.image)]
            if split == "train":
                for k in range(1, augment + 1):
                    img, _ = augmentation.augment(
                        photo.image, seed, cand.image_hash, k, advisor.allows_flip
                    )
                    variants.append((k, img))
            images_per_split[split] += 1
            for k, img in variants:
                name = f"{cand.image_hash}.jpg" if k == 0 else f"{cand.image_hash}-aug{k}.jpg"
                img.convert("RGB").save(staging / IMAGES_DIR / name, quality=JPEG_QUALITY)
                # The final location, not the staging folder's: it is renamed into place.
                record = example_record(
                    advisor,
                    str(out_dir / IMAGES_DIR / name),
                    text,
                    image_hash=cand.image_hash,
                    source=cand.source,
                    augmentation_index=k,
                )
                lines[split].append(json.dumps(record, ensure_ascii=False))
        for split, file_name in SPLIT_FILES.items():
            body = "".join(line + "\n" for line in lines[split])
            (staging / file_name).write_text(body, encoding="utf-8")

        files = _file_hashes(staging, out_dir)
        manifest = {
            "format": FORMAT,
            "advisor_id": advisor.id,
            "created_at": utcnow(),
            "root": str(out_dir),
            "seed": seed,
            "val_fraction": val_fraction,
            "augment": augment,
            "include_reviews": include_reviews,
            "sources": {s: sum(1 for c in chosen if c.source == s) for s in SOURCES},
            "bounds": {"max_text_chars": max_text_chars, "max_list_items": max_list_items},
            "splits": {
                split: {
                    "file": SPLIT_FILES[split],
                    "examples": len(lines[split]),
                    "images": images_per_split[split],
                }
                for split in SPLIT_FILES
            },
            "candidates": len(candidates),
            "rejected": {
                "count": len(rejected),
                "items": [_report(c) for c in rejected],
            },
            "superseded": {
                "count": len(superseded),
                "items": [_report(c) for c in superseded],
            },
            "schema_version": SCHEMA_VERSION,
            "prompt_version": PROMPT_VERSION,
            "package_version": __version__,
            "files": files,
            "data_sha256": _combined_hash(files),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _report(cand: Candidate) -> dict[str, Any]:
    return {
        "image_hash": cand.image_hash,
        "source": cand.source,
        "origin": cand.origin,
        "reasons": list(cand.reasons),
    }


def _file_hashes(root: Path, final: Path) -> dict[str, str]:
    """Content hashes: images as bytes, split files with their paths relative to `final`."""
    split_names = set(SPLIT_FILES.values())
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if name in split_names:
            data = _portable_split(data.decode("utf-8"), final)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def _portable_split(text: str, root: Path) -> bytes:
    """A split file's text with every image path relative to the data set (`images/x.jpg`),
    line for line (a blank line stays, so an edit still shows in the hash)."""
    out = []
    for line in text.splitlines(keepends=True):
        if not line.strip():
            out.append(line)
            continue
        record = json.loads(line)
        record["images"] = [_relative_image(p, root) for p in record.get("images", [])]
        ending = line[len(line.rstrip("\r\n")) :]
        out.append(json.dumps(record, ensure_ascii=False) + ending)
    return "".join(out).encode("utf-8")


def _relative_image(path: str, root: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return f"{IMAGES_DIR}/{p.name}"  # built elsewhere, then moved: images live in images/


def _combined_hash(files: dict[str, str]) -> str:
    text = "".join(f"{name}\t{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


# --- reading -----------------------------------------------------------------------------


def split_name(split: str) -> str:
    """The canonical name of a split: "train" or "validation" ("val" is the old name)."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLIT_FILES:
        raise InvalidInput(f"unknown split {split!r} (train or validation)")
    return name


def read_manifest(dataset_dir: Path) -> dict[str, Any]:
    """The data set's manifest; its JSONL files are checked against their recorded hashes.

    The splits come back keyed "train" and "validation", for a format 1 data set too.
    """
    dataset_dir = Path(dataset_dir).absolute()
    path = dataset_dir / MANIFEST
    if not path.is_file():
        raise NotFound(
            f"{dataset_dir} is not a data set (no {MANIFEST}); build one with "
            "`mondrian dataset build`"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    fmt = manifest.get("format")
    if fmt != FORMAT and fmt not in LEGACY_FORMATS:
        raise InvalidInput(f"{path}: unknown data set format {fmt!r}")
    manifest["splits"] = {split_name(k): v for k, v in manifest["splits"].items()}
    for split in manifest["splits"].values():
        file = dataset_dir / split["file"]
        if not file.is_file():
            raise InvalidInput(f"data set file missing: {file}")
        data = file.read_bytes()
        if fmt == FORMAT:
            data = _portable_split(data.decode("utf-8"), Path(manifest.get("root", dataset_dir)))
        if hashlib.sha256(data).hexdigest() != manifest["files"].get(split["file"]):
            raise InvalidInput(f"{file} changed since the data set was built (hash mismatch)")
    return manifest


def manifest_sha256(dataset_dir: Path) -> str:
    return hashlib.sha256((Path(dataset_dir) / MANIFEST).read_bytes()).hexdigest()


def split_file(dataset_dir: Path, split: str) -> Path:
    """The JSONL file of a split ("train", "validation" or its old name "val")."""
    dataset_dir = Path(dataset_dir).absolute()
    name = split_name(split)
    manifest = dataset_dir / MANIFEST
    if manifest.is_file():
        splits = json.loads(manifest.read_text(encoding="utf-8")).get("splits", {})
        for key, entry in splits.items():
            if SPLIT_ALIASES.get(key, key) == name:
                return dataset_dir / entry["file"]
    file = dataset_dir / SPLIT_FILES[name]
    if name == "validation" and not file.is_file() and (dataset_dir / "val.jsonl").is_file():
        return dataset_dir / "val.jsonl"  # a format 1 data set without its manifest
    return file


def resolve_image(dataset_dir: Path, path: str) -> Path:
    """Where an image of the data set is: its absolute path, a path relative to the
    folder (format 1), or, for a data set moved since it was built, `images/<name>`."""
    dataset_dir = Path(dataset_dir).absolute()
    p = Path(path)
    if not p.is_absolute():
        return dataset_dir / p
    if not p.exists() and (dataset_dir / IMAGES_DIR / p.name).exists():
        return dataset_dir / IMAGES_DIR / p.name
    return p


def load_split(dataset_dir: Path, split: str) -> list[dict[str, Any]]:
    """The records of one split, image paths absolute and pointing at the files."""
    dataset_dir = Path(dataset_dir).absolute()
    file = split_file(dataset_dir, split)
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        record["images"] = [str(resolve_image(dataset_dir, p)) for p in record["images"]]
        records.append(record)
    return records
