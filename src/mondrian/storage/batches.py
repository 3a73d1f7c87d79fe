"""Batches: the photos of one shoot critiqued at once, `mondrian analyze DIR...` or a
multi-file upload in the studio (service/routes/library.py). A batch is a row of its own
and its jobs point at it (`jobs.batch_id`, migration 0009_batches), so a shoot's page lists
them all however they came in, and deleting a job leaves the rest of its shoot alone.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from mondrian.errors import InvalidInput, NotFound
from mondrian.storage.db import utcnow
from mondrian.storage.jobs import Job, job_from_row, require_job

SOURCES = ("cli", "studio", "api")
_BATCH_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Batch:
    id: str
    source: str
    created_at: str


def check_batch_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise NotFound(f"unknown batch {str(batch_id)[:80]!r}", code="unknown_batch")
    return batch_id


def create_batch(conn: sqlite3.Connection, source: str) -> Batch:
    if source not in SOURCES:
        raise InvalidInput(f"batch source must be one of {SOURCES}, got {source!r}")
    batch = Batch(id=uuid.uuid4().hex, source=source, created_at=utcnow())
    conn.execute(
        "INSERT INTO batches (id, source, created_at) VALUES (?, ?, ?)",
        (batch.id, batch.source, batch.created_at),
    )
    return batch


def get_batch(conn: sqlite3.Connection, batch_id: str) -> Batch | None:
    row = conn.execute(
        "SELECT id, source, created_at FROM batches WHERE id = ?", (check_batch_id(batch_id),)
    ).fetchone()
    return None if row is None else Batch(row["id"], row["source"], row["created_at"])


def require_batch(conn: sqlite3.Connection, batch_id: str) -> Batch:
    batch = get_batch(conn, batch_id)
    if batch is None:
        raise NotFound(f"unknown batch {batch_id!r}", code="unknown_batch")
    return batch


def add_to_batch(
    conn: sqlite3.Connection, batch_id: str, job_id: str, photo_name: str | None = None
) -> Job:
    """Put a job the service queued (service/worker.py creates it) in a batch, with the
    photo's file name as the upload gave it (no folder)."""
    require_batch(conn, batch_id)
    job = require_job(conn, job_id)
    if job.batch_id not in (None, batch_id):
        raise InvalidInput(f"job {job.id} is already in batch {job.batch_id}")
    name = None if not photo_name else Path(photo_name.replace("\\", "/")).name[:255] or None
    conn.execute(
        "UPDATE jobs SET batch_id = ?, photo_name = coalesce(?, photo_name) WHERE id = ?",
        (batch_id, name, job.id),
    )
    return require_job(conn, job.id)


def batch_jobs(conn: sqlite3.Connection, batch_id: str) -> list[Job]:
    """The batch's jobs in the order they were queued."""
    require_batch(conn, batch_id)
    rows = conn.execute(
        "SELECT * FROM jobs WHERE batch_id = ? ORDER BY created_at, id", (batch_id,)
    ).fetchall()
    return [job_from_row(row) for row in rows]
