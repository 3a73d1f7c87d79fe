"""A job's lease, for the workers of one queue (several replicas may share it on
PostgreSQL, docs/storage.md): claiming the oldest queued job under a lease, renewing the
leases a worker holds (service/leases.py's heartbeat), giving a job back at a shutdown
(`interrupt_job`), and taking back running jobs whose worker is gone, by an expired lease
(`recover_expired`, while other workers run) or all of them at a lone server's start
(`requeue_or_fail_running`).

Each function runs inside `Database.write`'s transaction, as storage/jobs.py's do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mondrian.errors import InvalidInput
from mondrian.storage.db import utcnow
from mondrian.storage.dialect import Dialect, dialect_of
from mondrian.storage.jobs import Job, require_job, require_status, start_job

# How long a claimed job stays its worker's without a renewal (service/worker.py renews it
# every third of this while the job runs).
DEFAULT_LEASE_S = 60.0


@dataclass(frozen=True)
class Recovery:
    """What `requeue_or_fail_running` did."""

    requeued: list[str]
    failed: list[str]


def lease_end(seconds: float) -> str:
    """`utcnow()` plus `seconds`, in the same text form (so the two compare as text)."""
    end = datetime.now(UTC) + timedelta(seconds=seconds)
    return end.isoformat(timespec="microseconds").replace("+00:00", "Z")


def claim_next_job(
    conn: sqlite3.Connection, *, lease_s: float = DEFAULT_LEASE_S, owner: str | None = None
) -> Job | None:
    """Start the oldest queued job under a lease of `lease_s` seconds held by `owner`, and
    return it, or None when the queue is empty.

    Safe with several workers: on SQLite the write transaction holds the file's write lock;
    on PostgreSQL writes hold the advisory write lock (storage/postgres.py), and the row is
    also taken `FOR UPDATE SKIP LOCKED`, so two workers never claim one job even if a claim
    ever runs outside that lock.
    """
    if lease_s <= 0:
        raise InvalidInput(f"a lease must be positive, got {lease_s}")
    sql = "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
    if dialect_of(conn) is Dialect.POSTGRES:
        sql += " FOR UPDATE SKIP LOCKED"
    row = conn.execute(sql).fetchone()
    if row is None:
        return None
    start_job(conn, row["id"])
    conn.execute(
        "UPDATE jobs SET lease_until = ?, claimed_by = ? WHERE id = ?",
        (lease_end(lease_s), owner, row["id"]),
    )
    return require_job(conn, row["id"])


def renew_leases(
    conn: sqlite3.Connection, job_ids: Iterable[str], lease_s: float, owner: str | None
) -> list[str]:
    """Extend the leases `owner` holds on these running jobs; return the ids it no longer
    holds (finished meanwhile, or taken back after its lease ran out)."""
    ids = sorted(set(job_ids))
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    conn.execute(
        f"UPDATE jobs SET lease_until = ? WHERE status = 'running' AND id IN ({marks}) "
        "AND claimed_by IS NOT DISTINCT FROM ?",
        (lease_end(lease_s), *ids, owner),
    )
    held = conn.execute(
        f"SELECT id FROM jobs WHERE status = 'running' AND id IN ({marks}) "
        "AND claimed_by IS NOT DISTINCT FROM ?",
        (*ids, owner),
    ).fetchall()
    return sorted(set(ids) - {row["id"] for row in held})


def interrupt_job(conn: sqlite3.Connection, job_id: str) -> Job:
    """A running job a shutdown stopped goes back to the queue, recorded as interrupted
    (`error` says so until it starts again), and the attempt is not counted: a shutdown
    is not the job's failure, so restarts cannot exhaust a healthy job."""
    require_status(require_job(conn, job_id), ("running",), "interrupt")
    conn.execute(
        """
        UPDATE jobs SET status = 'queued', progress = 0, started_at = NULL,
                        attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                        lease_until = NULL, error = ?
        WHERE id = ?
        """,
        (f"interrupted by a shutdown at {utcnow()}; it runs again at the next start", job_id),
    )
    return require_job(conn, job_id)


def requeue_or_fail_running(conn: sqlite3.Connection, max_attempts: int) -> Recovery:
    """Crash recovery: jobs left running by a process that died go back to the queue,
    or fail once they have had `max_attempts` attempts.

    Call it when the only process that runs jobs starts, before it takes new work: it
    cannot tell a job orphaned by a crash from one another live worker is running (with
    several replicas on one database, `recover_expired` is the recovery instead).
    """
    rows = conn.execute(
        "SELECT id, attempts, claimed_by FROM jobs WHERE status = 'running' ORDER BY created_at"
    ).fetchall()
    return _recover(conn, rows, max_attempts, "interrupted by a restart")


def recover_expired(conn: sqlite3.Connection, max_attempts: int) -> Recovery:
    """Jobs whose worker stopped renewing their lease (its replica died or hung) go back
    to the queue, or fail once they have had `max_attempts` attempts. Safe while other
    workers run: a live worker renews its leases long before they run out."""
    rows = conn.execute(
        "SELECT id, attempts, claimed_by FROM jobs WHERE status = 'running' "
        "AND lease_until IS NOT NULL AND lease_until < ? ORDER BY created_at",
        (utcnow(),),
    ).fetchall()
    return _recover(conn, rows, max_attempts, "its server stopped (its lease ran out)")


def _recover(
    conn: sqlite3.Connection, rows: list[sqlite3.Row], max_attempts: int, why: str
) -> Recovery:
    if max_attempts < 1:
        raise InvalidInput(f"max_attempts must be at least 1, got {max_attempts}")
    requeued: list[str] = []
    failed: list[str] = []
    now = utcnow()
    for row in rows:
        by = f" on {row['claimed_by']}" if row["claimed_by"] else ""
        if row["attempts"] < max_attempts:
            conn.execute(
                "UPDATE jobs SET status = 'queued', progress = 0, started_at = NULL, "
                "lease_until = NULL, error = ? WHERE id = ?",
                (f"{why}{by} at {now}; queued again", row["id"]),
            )
            requeued.append(row["id"])
        else:
            conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                "lease_until = NULL WHERE id = ?",
                (
                    f"{why}{by} after {row['attempts']} attempt(s) "
                    f"(limit {max_attempts}); not retried",
                    now,
                    row["id"],
                ),
            )
            failed.append(row["id"])
    return Recovery(requeued=requeued, failed=failed)
