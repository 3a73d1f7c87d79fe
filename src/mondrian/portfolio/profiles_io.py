"""Portfolio profiles as JSONL, so that a person can curate scores and comments.

One JSON object per line:

    {"image_hash": "<sha256>", "title": "Moonrise" | null, "source": "model" | "curated",
     "model": "<model id>" | null, "critique": {<Critique>}}

`source` and `model` are written for the reader and ignored on import. Import is all or
nothing: every row is validated first (JSON, the Critique schema, a stored image, no hash
twice) and a single invalid row means nothing is written; the error lists each bad row
by line number. Imported rows become `source = 'curated'`, are added to the advisor's
portfolio (with their title) and keep the embedding already stored for their image.

A person edits integer scores, while retrieval prefers the calibrated `expected_score`.
So an imported `expected_score` survives only on a dimension whose score equals the
score stored for that image (the model's reading, left as it was); wherever the score
changed, or the image had no profile yet, it is cleared and the person's score counts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mondrian.errors import InvalidInput, describe_validation
from mondrian.schema import Critique
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.storage.db import Database

_HASH_PATTERN = r"^[0-9a-f]{64}$"
_MAX_ERRORS_SHOWN = 20


class ProfileRecord(BaseModel):
    """One line of a profiles file."""

    model_config = ConfigDict(extra="forbid")

    image_hash: str = Field(pattern=_HASH_PATTERN)
    title: str | None = Field(default=None, max_length=200)
    source: str | None = None
    model: str | None = None
    critique: Critique


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ProfilesFileInvalid(InvalidInput):
    """Some rows of a profiles file are invalid; nothing was imported."""

    code = "invalid_profiles"

    def __init__(self, errors: list[RowError]) -> None:
        shown = "\n".join(f"  {e}" for e in errors[:_MAX_ERRORS_SHOWN])
        more = len(errors) - _MAX_ERRORS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(errors)} invalid row(s); nothing was imported:\n{shown}{tail}")
        self.errors = errors


@dataclass(frozen=True)
class ImportReport:
    imported: int
    created: int
    replaced: int


def export_profiles(db: Database, advisor_id: str, out: TextIO) -> int:
    """Write the advisor's profiles to `out`, one JSON line each; returns how many."""
    with db.read() as conn:
        profiles = profile_store.list_profiles(conn, advisor_id)
        titles = {i.image_hash: i.title for i in image_store.list_portfolio(conn, advisor_id)}
    for profile in profiles:
        record = ProfileRecord(
            image_hash=profile.image_hash,
            title=titles.get(profile.image_hash),
            source=profile.source,
            model=profile.model,
            critique=profile.critique,
        )
        out.write(record.model_dump_json(exclude_none=False) + "\n")
    return len(profiles)


def parse_profiles(lines: Iterable[str]) -> tuple[list[tuple[int, ProfileRecord]], list[RowError]]:
    """Records with their line numbers, and the errors; blank lines are skipped."""
    records: list[tuple[int, ProfileRecord]] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            errors.append(RowError(number, f"not JSON: {exc}"))
            continue
        try:
            record = ProfileRecord.model_validate(data)
        except ValidationError as exc:
            errors.append(RowError(number, _summary(exc)))
            continue
        if record.image_hash in seen:
            errors.append(
                RowError(
                    number, f"image {record.image_hash} already on line {seen[record.image_hash]}"
                )
            )
            continue
        seen[record.image_hash] = number
        records.append((number, record))
    return records, errors


def import_profiles(db: Database, advisor_id: str, lines: Iterable[str]) -> ImportReport:
    """Validate every row, then write them all in one transaction (or raise
    ProfilesFileInvalid and write nothing)."""
    records, errors = parse_profiles(lines)
    with db.read() as conn:
        for number, record in records:
            if image_store.get_image(conn, record.image_hash) is None:
                errors.append(
                    RowError(number, f"image {record.image_hash} is not stored; index it first")
                )
    if errors:
        raise ProfilesFileInvalid(sorted(errors, key=lambda e: e.line))
    if not records:
        raise InvalidInput("the profiles file has no rows", code="empty_profiles")
    return db.write(_write_all, advisor_id, [record for _, record in records])


def _write_all(
    conn: sqlite3.Connection, advisor_id: str, records: list[ProfileRecord]
) -> ImportReport:
    created = replaced = 0
    for record in records:
        existing = profile_store.get_profile(conn, advisor_id, record.image_hash)
        critique = _reconcile(record.critique, existing.critique if existing else None)
        image_store.add_to_portfolio(conn, advisor_id, record.image_hash, record.title)
        profile_store.upsert_profile(
            conn,
            advisor_id,
            record.image_hash,
            critique,
            "curated",
            # The embedding is the image's, not the critique's: keep it, and the model
            # that made it (retrieval compares embeddings of one model only).
            existing.model if existing else None,
            existing.embedding if existing else None,
        )
        if existing:
            replaced += 1
        else:
            created += 1
    return ImportReport(imported=len(records), created=created, replaced=replaced)


def _reconcile(critique: Critique, stored: Critique | None) -> Critique:
    """Clear expected_score wherever the person's score departs from the stored one."""
    updates = {}
    for key, dim in critique.dimensions.items():
        if dim.expected_score is None:
            continue
        before = getattr(stored.dimensions, key) if stored else None
        if before is None or before.score != dim.score:
            updates[key] = dim.model_copy(update={"expected_score": None})
    if not updates:
        return critique
    return critique.model_copy(
        update={"dimensions": critique.dimensions.model_copy(update=updates)}
    )


def _summary(exc: ValidationError) -> str:
    return describe_validation(exc, root="row", limit=3)
