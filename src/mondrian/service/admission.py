"""The job-table writes of the service: admission against a bounded queue, with the A/B
variant drawn from the job id.

Each function runs inside `Database.write`'s transaction (call it as `db.write(fn, ...)`),
so a check and the writes that follow it are atomic, across processes too.
"""

from __future__ import annotations

import sqlite3

from mondrian.service.policy import ModelPolicy
from mondrian.storage import jobs
from mondrian.storage.jobs import Job


class QueueAtCapacity(Exception):
    """Raised inside `admit`; the worker turns it into the user-facing `QueueFull`."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"{depth} jobs are waiting")
        self.depth = depth


def queued_count(conn: sqlite3.Connection) -> int:
    return jobs.count_by_status(conn)["queued"]


def admit(
    conn: sqlite3.Connection,
    advisor_id: str,
    image_hash: str,
    mode: str,
    model_id: str,
    policy: ModelPolicy,
    capacity: int,
) -> Job:
    """A new queued job with its variant, unless `capacity` jobs are already waiting."""
    depth = queued_count(conn)
    if depth >= capacity:
        raise QueueAtCapacity(depth)
    job_id = jobs.new_job_id()
    return jobs.create_job(
        conn,
        advisor_id,
        image_hash,
        mode,
        model_id,
        variant=policy.variant_for(job_id),
        job_id=job_id,
    )
