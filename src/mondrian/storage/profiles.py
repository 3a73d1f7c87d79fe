"""Dimensional profiles of portfolio images: the critique an advisor gives each one.

RAG retrieves exemplars by these profiles (and by `embedding` where one is stored).
`source` says where the critique came from: `model` (indexed by a model, see `model`)
or `curated` (written or corrected by a person).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from mondrian.errors import InvalidInput, NotFound
from mondrian.schema import Critique
from mondrian.storage.db import utcnow
from mondrian.storage.images import check_hash, require_image

SOURCES: tuple[str, ...] = ("model", "curated")


@dataclass(frozen=True)
class Profile:
    advisor_id: str
    image_hash: str
    critique: Critique
    source: str
    model: str | None
    embedding: bytes | None
    created_at: str
    updated_at: str


def upsert_profile(
    conn: sqlite3.Connection,
    advisor_id: str,
    image_hash: str,
    critique: Critique,
    source: str,
    model: str | None,
    embedding: bytes | None = None,
) -> None:
    """Store an image's profile for an advisor, replacing any earlier one whole
    (embedding included; `set_embedding` changes only the embedding)."""
    if source not in SOURCES:
        raise InvalidInput(f"profile source must be one of {SOURCES}, got {source!r}")
    if not isinstance(critique, Critique):
        raise InvalidInput(f"expected a Critique, got {type(critique).__name__}")
    require_image(conn, image_hash)
    now = utcnow()
    conn.execute(
        """
        INSERT INTO profiles
            (advisor_id, image_hash, critique, source, model, embedding, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (advisor_id, image_hash) DO UPDATE SET
            critique = excluded.critique, source = excluded.source, model = excluded.model,
            embedding = excluded.embedding, updated_at = excluded.updated_at
        """,
        (
            advisor_id,
            image_hash,
            critique.model_dump_json(),
            source,
            model,
            _blob(embedding),
            now,
            now,
        ),
    )


def set_embedding(
    conn: sqlite3.Connection, advisor_id: str, image_hash: str, embedding: bytes | None
) -> None:
    cur = conn.execute(
        "UPDATE profiles SET embedding = ?, updated_at = ? WHERE advisor_id = ? AND image_hash = ?",
        (_blob(embedding), utcnow(), advisor_id, image_hash),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no profile of image {image_hash} for advisor {advisor_id!r}")


def _blob(embedding: bytes | None) -> bytes | None:
    if embedding is None:
        return None
    if not isinstance(embedding, bytes | bytearray | memoryview):
        raise InvalidInput(f"embedding must be bytes, got {type(embedding).__name__}")
    return bytes(embedding)


def _profile(row: sqlite3.Row) -> Profile:
    return Profile(
        advisor_id=row["advisor_id"],
        image_hash=row["image_hash"],
        critique=Critique.model_validate_json(row["critique"]),
        source=row["source"],
        model=row["model"],
        embedding=row["embedding"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def get_profile(conn: sqlite3.Connection, advisor_id: str, image_hash: str) -> Profile | None:
    row = conn.execute(
        "SELECT * FROM profiles WHERE advisor_id = ? AND image_hash = ?",
        (advisor_id, check_hash(image_hash)),
    ).fetchone()
    return None if row is None else _profile(row)


def has_profile(conn: sqlite3.Connection, advisor_id: str, image_hash: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM profiles WHERE advisor_id = ? AND image_hash = ?",
        (advisor_id, image_hash),
    ).fetchone()
    return row is not None


def list_profiles(conn: sqlite3.Connection, advisor_id: str) -> list[Profile]:
    """An advisor's profiles, oldest first."""
    rows = conn.execute(
        "SELECT * FROM profiles WHERE advisor_id = ? ORDER BY created_at, image_hash",
        (advisor_id,),
    ).fetchall()
    return [_profile(row) for row in rows]


def count_profiles(conn: sqlite3.Connection, advisor_id: str) -> int:
    """How many profiles an advisor has (RAG is available when this is above zero)."""
    row = conn.execute(
        "SELECT count(*) FROM profiles WHERE advisor_id = ?", (advisor_id,)
    ).fetchone()
    return int(row[0])


def delete_profile(conn: sqlite3.Connection, advisor_id: str, image_hash: str) -> None:
    cur = conn.execute(
        "DELETE FROM profiles WHERE advisor_id = ? AND image_hash = ?", (advisor_id, image_hash)
    )
    if cur.rowcount == 0:
        raise NotFound(f"no profile of image {image_hash} for advisor {advisor_id!r}")
