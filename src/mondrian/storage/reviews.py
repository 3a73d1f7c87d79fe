"""Reviews: a person's corrected critique of a past job, and who vouches for it.

A review replaces a curated training target (training/dataset.py), so it is training
data only once trusted: posted with a trusted token, or accepted by an operator
(`mondrian reviews accept`, `POST /admin/reviews/{id}/accept`). Every review records
its author (the client address or the token's id); the same critique of the same job
is stored once.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Literal

from mondrian.errors import InvalidInput, MondrianError, NotFound
from mondrian.schema import Critique
from mondrian.storage.db import utcnow
from mondrian.storage.jobs import require_job

ReviewStatus = Literal["pending", "accepted", "rejected"]
STATUSES: tuple[ReviewStatus, ...] = ("pending", "accepted", "rejected")


class DuplicateReview(MondrianError):
    code = "duplicate_review"
    http_status = 409


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
    author: str | None = None
    status: ReviewStatus = "pending"
    decided_by: str | None = None
    decided_at: str | None = None


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
        author=row["author"],
        status=row["status"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
    )


def content_digest(job_id: str, critique: Critique) -> str:
    """What makes two reviews the same: the job and the critique's canonical JSON."""
    return hashlib.sha256(f"{job_id}\n{critique.model_dump_json()}".encode()).hexdigest()


def add_review(
    conn: sqlite3.Connection,
    job_id: str,
    critique: Critique,
    reviewer: str | None = None,
    note: str | None = None,
    *,
    author: str | None = None,
    accepted_by: str | None = None,
) -> Review:
    """Record a corrected critique for a job; the advisor and image come from the job.

    `reviewer` is the name the person gave; `author` who the service saw ('client:ADDR'
    or 'token:ID'). With `accepted_by` (a trusted token, an operator) it is accepted at
    once; otherwise it waits, pending, for an operator. The same critique of the same
    job is refused (DuplicateReview)."""
    if not isinstance(critique, Critique):
        raise InvalidInput(f"expected a Critique, got {type(critique).__name__}")
    job = require_job(conn, job_id)
    digest = content_digest(job.id, critique)
    if conn.execute(
        "SELECT 1 FROM reviews WHERE job_id = ? AND digest = ?", (job.id, digest)
    ).fetchone():
        raise DuplicateReview(f"job {job.id} already has this review")
    now = utcnow()
    row = conn.execute(
        """
        INSERT INTO reviews (job_id, advisor_id, image_hash, critique, reviewer, note,
                             created_at, author, status, decided_by, decided_at, digest)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        RETURNING *
        """,
        (
            job.id,
            job.advisor_id,
            job.image_hash,
            critique.model_dump_json(),
            reviewer,
            note,
            now,
            author,
            "accepted" if accepted_by else "pending",
            accepted_by,
            now if accepted_by else None,
            digest,
        ),
    ).fetchone()
    return _review(row)


def decide_review(
    conn: sqlite3.Connection, review_id: int, status: ReviewStatus, decided_by: str
) -> Review:
    """An operator's decision: 'accepted' (training data) or 'rejected' (never)."""
    if status not in ("accepted", "rejected"):
        raise InvalidInput(f"a review is accepted or rejected, not {status!r}")
    cur = conn.execute(
        "UPDATE reviews SET status = ?, decided_by = ?, decided_at = ? WHERE id = ?",
        (status, decided_by, utcnow(), review_id),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no review {review_id}", code="unknown_review")
    review = get_review(conn, review_id)
    assert review is not None
    return review


def recent_by(conn: sqlite3.Connection, author: str, since: str) -> tuple[int, str | None]:
    """(how many, the oldest's created_at) of the reviews `author` stored since `since`
    (a `utcnow()` text): for the rate limit and its Retry-After."""
    row = conn.execute(
        "SELECT count(*), min(created_at) FROM reviews WHERE author = ? AND created_at >= ?",
        (author, since),
    ).fetchone()
    return int(row[0]), row[1]


def get_review(conn: sqlite3.Connection, review_id: int) -> Review | None:
    row = conn.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchone()
    return None if row is None else _review(row)


def list_reviews(
    conn: sqlite3.Connection,
    advisor_id: str | None = None,
    job_id: str | None = None,
    status: ReviewStatus | None = None,
) -> list[Review]:
    """Reviews oldest first, optionally for one advisor, one job and/or one status."""
    where, params = [], []
    for column, value in (("advisor_id", advisor_id), ("job_id", job_id), ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = "SELECT * FROM reviews"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
    return [_review(row) for row in rows]


def training_rows(conn: sqlite3.Connection, advisor_id: str) -> list[sqlite3.Row]:
    """The advisor's accepted reviews as stored (id, job_id, image_hash, critique text,
    created_at), oldest first: `dataset build --include-reviews` validates each itself.
    Pending and rejected reviews are never training data."""
    return conn.execute(
        "SELECT id, job_id, image_hash, critique, created_at FROM reviews "
        "WHERE advisor_id = ? AND status = 'accepted' ORDER BY created_at, id",
        (advisor_id,),
    ).fetchall()
