"""Reviews: a person's corrected critique of a past job. They become training data."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from mondrian.errors import InvalidInput
from mondrian.schema import Critique
from mondrian.storage.db import utcnow
from mondrian.storage.jobs import require_job


@dataclass(frozen=True)
class Review:
    id: int
    job_id: str
    advisor_id: str
    image_hash: str
    critique: Critique
    reviewer: str | None
    note: str | None
    created_at: str


def _review(row: sqlite3.Row) -> Review:
    return Review(
        id=row["id"],
        job_id=row["job_id"],
        advisor_id=row["advisor_id"],
        image_hash=row["image_hash"],
        critique=Critique.model_validate_json(row["critique"]),
        reviewer=row["reviewer"],
        note=row["note"],
        created_at=row["created_at"],
    )


def add_review(
    conn: sqlite3.Connection,
    job_id: str,
    critique: Critique,
    reviewer: str | None = None,
    note: str | None = None,
) -> Review:
    """Record a corrected critique for a job; the advisor and image come from the job."""
    if not isinstance(critique, Critique):
        raise InvalidInput(f"expected a Critique, got {type(critique).__name__}")
    job = require_job(conn, job_id)
    cur = conn.execute(
        """
        INSERT INTO reviews (job_id, advisor_id, image_hash, critique, reviewer, note, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        """,
        (
            job.id,
            job.advisor_id,
            job.image_hash,
            critique.model_dump_json(),
            reviewer,
            note,
            utcnow(),
        ),
    )
    row = conn.execute("SELECT * FROM reviews WHERE id = ?", (cur.lastrowid,)).fetchone()
    return _review(row)


def get_review(conn: sqlite3.Connection, review_id: int) -> Review | None:
    row = conn.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchone()
    return None if row is None else _review(row)


def list_reviews(
    conn: sqlite3.Connection, advisor_id: str | None = None, job_id: str | None = None
) -> list[Review]:
    """Reviews oldest first, optionally for one advisor and/or one job."""
    where, params = [], []
    if advisor_id is not None:
        where.append("advisor_id = ?")
        params.append(advisor_id)
    if job_id is not None:
        where.append("job_id = ?")
        params.append(job_id)
    sql = "SELECT * FROM reviews"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
    return [_review(row) for row in rows]
