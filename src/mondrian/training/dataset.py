"""Training data for an advisor's LoRA: (image, the advisor's prompt, target critique JSON).

`build_dataset` writes it, complete or not at all: the targets (targets.py: candidates from
profiles and reviews, checked against the grammar's bounds, one per image, split by image),
the photos (read upright, augmented for the training split only: validation loss is
measured on the original photos), one example per line, and the manifest with its hashes
(dataset_files.py, which also reads it back). Invalid targets are reported (manifest and
stderr), never kept.

The prompt is exactly the one `--mode lora` sends (`critique_prompt(advisor, image,
facts=...)` without context), its "Measured:" block written from the facts of the image the
example shows (each augmentation measured on its own pixels: a flip moves the subject and
turns the tilt), so the LoRA learns to use the facts; the row records them
(`mondrian.facts`) for evaluation's checks. The answer is exactly what the constrained
model writes (`target_text`). The records are the messages + images form TRL and mlx-vlm
read.

"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mondrian import __version__
from mondrian.advisors.model import Advisor
from mondrian.config import Settings
from mondrian.errors import InvalidInput, MondrianError
from mondrian.facts.measure import FACTS_VERSION, measure
from mondrian.images import read_image_file
from mondrian.prompts import PROMPT_VERSION, critique_prompt
from mondrian.schema import SCHEMA_VERSION, Fact
from mondrian.staging import prepare_out_dir, staged_output
from mondrian.storage.advisors import require_advisor
from mondrian.storage.db import Database, utcnow
from mondrian.storage.images import image_path
from mondrian.training import augment as augmentation
from mondrian.training.dataset_files import (
    FORMAT,
    IMAGES_DIR,
    MANIFEST,
    SPLIT_FILES,
    combined_hash,
    file_hashes,
    load_split,
)
from mondrian.training.targets import (
    SOURCES,
    Candidate,
    check_target,
    choose_targets,
    collect_candidates,
    split_images,
    target_text,
)

# load_split is dataset_files.py's; named here too for callers that build a data set and
# read it back (tests/backends/test_mlx_backend.py).
__all__ = ["build_dataset", "example_record", "load_split"]

JPEG_QUALITY = 95


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
        examples = _Examples(staging, out_dir, advisor, settings, augment, seed)
        for cand in sorted(chosen, key=lambda c: c.image_hash):
            split = "train" if cand.image_hash in train_hashes else "validation"
            path = paths[cand.image_hash]
            assert path is not None and cand.critique is not None
            examples.add(cand, path, split)
        examples.write_splits()

        files = file_hashes(staging, out_dir)
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
                    "examples": len(examples.lines[split]),
                    "images": examples.images[split],
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
            # The prompts' "Measured:" blocks were written from facts of this version.
            "facts_version": FACTS_VERSION,
            "package_version": __version__,
            "files": files,
            "data_sha256": combined_hash(files),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


@dataclass
class _Examples:
    """The examples being written into the staging folder: images, then the split files."""

    staging: Path
    out_dir: Path
    advisor: Advisor
    settings: Settings
    augment: int
    seed: int
    lines: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLIT_FILES})
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_FILES, 0))

    def add(self, cand: Candidate, path: Path, split: str) -> None:
        """The photo (and, in the training split, its augmentations), one line each."""
        assert cand.critique is not None
        photo = read_image_file(path, max_bytes=2**40, max_pixels=self.settings.max_image_pixels)
        text = target_text(cand.critique)
        variants = [(0, photo.image)]
        if split == "train":
            for k in range(1, self.augment + 1):
                img, _ = augmentation.augment(
                    photo.image, self.seed, cand.image_hash, k, self.advisor.allows_flip
                )
                variants.append((k, img))
        self.images[split] += 1
        for k, img in variants:
            name = f"{cand.image_hash}.jpg" if k == 0 else f"{cand.image_hash}-aug{k}.jpg"
            saved = self.staging / IMAGES_DIR / name
            img.convert("RGB").save(saved, quality=JPEG_QUALITY)
            # The pixels as saved (the JPEG the model trains on, and what `analyze` of that
            # file measures: the same "Measured:" block at training and at serving) and the
            # photo's EXIF.
            with Image.open(saved) as written:
                facts = measure(dataclasses.replace(photo, image=written.convert("RGB")))
            # The final location, not the staging folder's: it is renamed into place.
            record = example_record(
                self.advisor,
                str(self.out_dir / IMAGES_DIR / name),
                text,
                image_hash=cand.image_hash,
                source=cand.source,
                augmentation_index=k,
                facts=facts,
            )
            self.lines[split].append(json.dumps(record, ensure_ascii=False))

    def write_splits(self) -> None:
        for split, file_name in SPLIT_FILES.items():
            body = "".join(line + "\n" for line in self.lines[split])
            (self.staging / file_name).write_text(body, encoding="utf-8")


def example_record(
    advisor: Advisor,
    image_rel: str,
    target: str,
    *,
    image_hash: str,
    source: str,
    augmentation_index: int,
    facts: list[Fact] | None = None,
) -> dict[str, Any]:
    """One line of train/validation.jsonl: the exact lora-mode prompt (with the image's
    "Measured:" block) plus the answer."""
    facts = facts or []
    # The image itself lives in "images"; the prompt only needs one image slot.
    prompt = critique_prompt(advisor, Image.new("RGB", (1, 1)), facts=facts)
    messages = prompt.messages()
    messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return {
        "messages": messages,
        "images": [image_rel],
        "mondrian": {
            "image_hash": image_hash,
            "source": source,
            "augmentation": augmentation_index,
            "facts": [fact.model_dump() for fact in facts],
        },
    }


def _report(cand: Candidate) -> dict[str, Any]:
    return {
        "image_hash": cand.image_hash,
        "source": cand.source,
        "origin": cand.origin,
        "reasons": list(cand.reasons),
    }
