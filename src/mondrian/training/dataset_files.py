"""An advisor's data set on disk: its files, their hashes, and reading it back.

    DIR/train.jsonl, DIR/validation.jsonl   one example per line (messages + images)
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
from pathlib import Path
from typing import Any

from mondrian.errors import InvalidInput, NotFound

FORMAT = "mondrian-dataset/2"
LEGACY_FORMATS = ("mondrian-dataset/1",)  # val.jsonl, paths relative to the folder
MANIFEST = "manifest.json"
SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}
SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
IMAGES_DIR = "images"


# --- hashes ------------------------------------------------------------------------------


def file_hashes(root: Path, final: Path) -> dict[str, str]:
    """Content hashes: images as bytes, split files with their paths relative to `final`."""
    split_names = set(SPLIT_FILES.values())
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if name in split_names:
            data = portable_split(data.decode("utf-8"), final)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def portable_split(text: str, root: Path) -> bytes:
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


def combined_hash(files: dict[str, str]) -> str:
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
            data = portable_split(data.decode("utf-8"), Path(manifest.get("root", dataset_dir)))
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
