"""Past jobs a page at a time, newest first: `mondrian history` and `GET /jobs`.

Pages are cut by a cursor (keyset paging on created_at, then rowid) rather than an offset,
so a job queued while a client pages never shifts a page or repeats a row. The cursor is
opaque to clients: the last row's position, base64url-encoded.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
from dataclasses import dataclass

from mondrian.errors import InvalidInput, NotFound
from mondrian.storage.jobs import STATUSES, Job, job_filter, job_from_row

MAX_LIMIT = 500
_CURSOR = re.compile(r"(\d{4}-\d\d-\d\dT[0-9:.+Z-]+)\|(\d{1,19})")


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None  # None on the last page


def encode_cursor(created_at: str, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{created_at}|{rowid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(created_at, rowid) of a cursor this module wrote, else InvalidInput."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidInput(f"not a cursor from a jobs page: {cursor!r}", code="bad_cursor")
    return match[1], int(match[2])


def page_jobs(
    conn: sqlite3.Connection,
    *,
    limit: int = 20,
    cursor: str | None = None,
    advisor_id: str | None = None,
    status: str | None = None,
    mode_used: str | None = None,
) -> JobPage:
    """Up to `limit` jobs after `cursor` (from the start when None), newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    where: list[str] = []
    params: list[object] = []
    if cursor is not None:
        created_at, rowid = decode_cursor(cursor)
        where.append("(created_at < ? OR (created_at = ? AND rowid < ?))")
        params += [created_at, created_at, rowid]
    more_where, more_params = job_filter(advisor_id=advisor_id, status=status, mode_used=mode_used)
    where += more_where
    params += more_params
    sql = "SELECT rowid AS _rowid, * FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    # One row more than asked: whether there is a next page, without a count.
    sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows and more else None
    return JobPage(
        jobs=[job_from_row(row) for row in rows],
        next_cursor=None if last is None else encode_cursor(last["created_at"], last["_rowid"]),
    )


def resolve_job(conn: sqlite3.Connection, ref: str) -> Job:
    """The job a full id or a unique prefix of at least 6 hex digits names (report file
    names carry the first 12); NotFound or InvalidInput (ambiguous) otherwise."""
    ref = ref.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{6,32}", ref):
        raise InvalidInput(
            f"a job is named by its id or the first 6 or more of its hex digits, got {ref!r}",
            code="bad_job_id",
        )
    rows = conn.execute(
        "SELECT * FROM jobs WHERE substr(id, 1, ?) = ? LIMIT 2", (len(ref), ref)
    ).fetchall()
    if not rows:
        raise NotFound(f"no job {ref!r} (see `mondrian history`)")
    if len(rows) > 1:
        message = f"{ref!r} names more than one job; give more of its id"
        raise InvalidInput(message, code="ambiguous")
    return job_from_row(rows[0])
