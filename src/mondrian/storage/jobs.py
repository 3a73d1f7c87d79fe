"""Analysis jobs: queued -> running -> done | failed, with what served them.

Every job records the mode asked for and the mode used, the model, the A/B variant and
the adapter version, so an A/B report can be computed from this table alone. All state
changes are guarded (a finished job cannot be started again) and run inside
`Database.write`, so a check and its update are one transaction (leases: job_leases.py).
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mondrian.errors import (
    InvalidInput,
    MondrianError,
    NotFound,
    describe_validation,
    parse_choice,
)
from mondrian.modes import Mode, Variant
from mondrian.schema import AnalysisResult
from mondrian.storage.adapters import parse_adapter_ref
from mondrian.storage.db import json_text, json_value, utcnow
from mondrian.storage.images import forget_if_unreferenced, require_image

STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed")


@dataclass(frozen=True)
class Job:
    id: str
    advisor_id: str
    image_hash: str
    mode_requested: str
    mode_used: str | None
    model_id: str
    variant: str
    adapter_version: int | None
    status: str
    progress: float
    timings: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    photo_name: str | None = None
    exif: dict[str, Any] = field(default_factory=dict)
    report_path: str | None = None
    batch_id: str | None = None
    lease_until: str | None = None  # while running: when its worker's claim runs out
    claimed_by: str | None = None  # the worker (host:pid) that claimed it last

    @property
    def phase(self) -> str:
        """Where a job is, finer than `status`: `queued`; `preparing` (running, no token yet:
        the photo through the processor, the prompt's pass, an adapter loading);
        `generating` (tokens are being written, `progress` counts them); `done`; `failed`."""
        if self.status == "running":
            return "generating" if self.progress > 0 else "preparing"
        return self.status

    @property
    def score(self) -> float | None:
        """The critique's overall score, once done."""
        result = self.result or {}
        return result.get("critique", {}).get("overall_score")

    @property
    def adapter_ref(self) -> str | None:
        """The adapter that served the job as `advisor@vN`, or None."""
        if self.adapter_version is None:
            return None
        return f"{self.advisor_id}@v{self.adapter_version}"

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def analysis(self) -> AnalysisResult | None:
        return None if self.result is None else AnalysisResult.model_validate(self.result)


class InUse(MondrianError):
    """A job that cannot be deleted now: it is still running, or others' data needs it."""

    code = "in_use"
    http_status = 409


def job_filter(
    *,
    advisor_id: str | None = None,
    status: str | None = None,
    mode_used: str | None = None,
) -> tuple[list[str], list[object]]:
    """The WHERE terms and their parameters that keep one advisor's, one status's and/or
    one served mode's jobs (list_jobs and job_pages.page_jobs both filter this way)."""
    where: list[str] = []
    params: list[object] = []
    if advisor_id is not None:
        where.append("advisor_id = ?")
        params.append(advisor_id)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if mode_used is not None:
        where.append("mode_used = ?")
        params.append(mode_used)
    return where, params


def job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        advisor_id=row["advisor_id"],
        image_hash=row["image_hash"],
        mode_requested=row["mode_requested"],
        mode_used=row["mode_used"],
        model_id=row["model_id"],
        variant=row["variant"],
        adapter_version=row["adapter_version"],
        status=row["status"],
        progress=row["progress"],
        timings=json_value(row["timings"]) or {},
        result=json_value(row["result"]),
        error=row["error"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        photo_name=row["photo_name"],
        exif=json_value(row["exif"]) or {},
        report_path=row["report_path"],
        batch_id=row["batch_id"],
        lease_until=row["lease_until"],
        claimed_by=row["claimed_by"],
    )


def _check_mode(mode: str, what: str) -> None:
    parse_choice(Mode, mode, what)


def create_job(
    conn: sqlite3.Connection,
    advisor_id: str,
    image_hash: str,
    mode_requested: str,
    model_id: str,
    variant: str = "base",
    adapter_version: int | None = None,
    job_id: str | None = None,
    *,
    photo_name: str | None = None,
    exif: Mapping[str, str | int] | None = None,
    batch_id: str | None = None,
) -> Job:
    """A new queued job for a stored image. `job_id` lets a caller draw the id first (the
    A/B variant is a hash of it); by default a random one is drawn. `photo_name` (the
    file's name, no folder) and `exif` (images.PhotoExif.as_dict()) are what history shows;
    `batch_id` (storage/batches.py) puts it in a shoot."""
    _check_mode(mode_requested, "mode_requested")
    parse_choice(Variant, variant, "variant")
    if adapter_version is not None and (
        not isinstance(adapter_version, int) or adapter_version < 1
    ):
        raise InvalidInput(f"adapter_version must be a positive int, got {adapter_version!r}")
    require_image(conn, image_hash)
    if job_id is None:
        job_id = new_job_id()
    elif not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise InvalidInput(f"job ids are 32 lowercase hex digits, got {job_id!r}")
    conn.execute(
        """
        INSERT INTO jobs (id, advisor_id, image_hash, mode_requested, model_id, variant,
                          adapter_version, status, progress, attempts, created_at,
                          photo_name, exif, batch_id)
        VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', 0, 0, ?, ?, ?, ?)
        """,
        (
            job_id,
            advisor_id,
            image_hash,
            mode_requested,
            model_id,
            variant,
            adapter_version,
            utcnow(),
            photo_file_name(photo_name),
            json_text(dict(exif)) if exif else None,
            batch_id,
        ),
    )
    return require_job(conn, job_id)


def photo_file_name(name: str | None) -> str | None:
    """The file's own name, no folder: a browser may send a Windows path (backslashes,
    which POSIX paths do not split on); an empty name is none."""
    if not name:
        return None
    return Path(name.replace("\\", "/")).name[:255] or None


def set_report_path(conn: sqlite3.Connection, job_id: str, path: str) -> Job:
    """Where a finished job's report was written (the last one written, if several)."""
    require_status(require_job(conn, job_id), ("done",), "record a report of")
    conn.execute("UPDATE jobs SET report_path = ? WHERE id = ?", (str(path), job_id))
    return require_job(conn, job_id)


def new_job_id() -> str:
    return uuid.uuid4().hex


def get_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def require_job(conn: sqlite3.Connection, job_id: str) -> Job:
    job = get_job(conn, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def require_status(job: Job, allowed: tuple[str, ...], action: str) -> None:
    if job.status not in allowed:
        raise InvalidInput(f"cannot {action} job {job.id}: it is {job.status}")


def start_job(conn: sqlite3.Connection, job_id: str) -> Job:
    """Mark a queued job running; counts an attempt."""
    require_status(require_job(conn, job_id), ("queued",), "start")
    conn.execute(
        """
        UPDATE jobs SET status = 'running', started_at = ?, progress = 0,
                        attempts = attempts + 1, error = NULL
        WHERE id = ?
        """,
        (utcnow(), job_id),
    )
    return require_job(conn, job_id)


def set_progress(conn: sqlite3.Connection, job_id: str, progress: float) -> None:
    """Progress of a running job, 0 to 1."""
    if not 0.0 <= float(progress) <= 1.0:
        raise InvalidInput(f"progress must be between 0 and 1, got {progress}")
    require_status(require_job(conn, job_id), ("running",), "report progress on")
    conn.execute("UPDATE jobs SET progress = ? WHERE id = ?", (float(progress), job_id))


def finish_job(
    conn: sqlite3.Connection,
    job_id: str,
    result: AnalysisResult | Mapping[str, Any] | str,
    mode_used: str | None = None,
    timings: Mapping[str, float] | None = None,
) -> Job:
    """Record a job's result and mark it done.

    `result` is validated as an `AnalysisResult` (so every stored result loads back);
    its `job_id` is set to this job. `mode_used` must agree with the result's (it is
    there so callers can state it); `timings`, if given, replace the result's. The
    adapter version that served is read from the result's `model.adapter`.
    """
    job = require_job(conn, job_id)
    require_status(job, ("queued", "running"), "finish")
    analysis = _analysis(result)
    if analysis.job_id not in (None, job_id):
        raise InvalidInput(f"result belongs to job {analysis.job_id}, not {job_id}")
    if mode_used is not None and mode_used != analysis.mode_used:
        raise InvalidInput(
            f"mode_used {mode_used!r} differs from the result's {analysis.mode_used!r}"
        )
    mode_used = analysis.mode_used
    _check_mode(mode_used, "mode_used")
    if analysis.advisor_id != job.advisor_id:
        raise InvalidInput(
            f"result is for advisor {analysis.advisor_id!r}, job {job_id} for {job.advisor_id!r}"
        )
    adapter_version = None
    if analysis.model.adapter is not None:
        owner, adapter_version = parse_adapter_ref(analysis.model.adapter)
        if owner != job.advisor_id:
            raise InvalidInput(
                f"adapter {analysis.model.adapter} is not one of {job.advisor_id!r}'s"
            )
    source = analysis.timings if timings is None else timings
    timings = {str(k): float(v) for k, v in source.items()}
    analysis = analysis.model_copy(update={"job_id": job_id, "timings": timings})
    now = utcnow()
    conn.execute(
        """
        UPDATE jobs SET status = 'done', progress = 1, mode_used = ?, result = ?, timings = ?,
                        adapter_version = ?, error = NULL, finished_at = ?,
                        started_at = coalesce(started_at, ?)
        WHERE id = ?
        """,
        (
            mode_used,
            analysis.model_dump_json(),
            json_text(timings),
            adapter_version,
            now,
            now,
            job_id,
        ),
    )
    return require_job(conn, job_id)


def _analysis(result: AnalysisResult | Mapping[str, Any] | str) -> AnalysisResult:
    if isinstance(result, AnalysisResult):
        return result
    try:
        if isinstance(result, str):
            return AnalysisResult.model_validate_json(result)
        return AnalysisResult.model_validate(dict(result))
    except ValidationError as exc:
        raise InvalidInput(
            f"job result is not a valid analysis result: {describe_validation(exc)}"
        ) from None


def fail_job(conn: sqlite3.Connection, job_id: str, error: str) -> Job:
    """Mark a queued or running job failed, with the reason a user will read."""
    require_status(require_job(conn, job_id), ("queued", "running"), "fail")
    conn.execute(
        "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
        (str(error) or "failed", utcnow(), job_id),
    )
    return require_job(conn, job_id)


def list_jobs(
    conn: sqlite3.Connection,
    status: str | None = None,
    advisor_id: str | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first, optionally by status and advisor."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {STATUSES}, got {status!r}")
    if limit < 1:
        raise InvalidInput(f"limit must be positive, got {limit}")
    where, params = job_filter(advisor_id=advisor_id, status=status)
    sql = "SELECT * FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
    rows = conn.execute(sql, (*params, limit)).fetchall()
    return [job_from_row(row) for row in rows]


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of jobs in each status; every status is present."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status"):
        counts[row["status"]] = row["n"]
    return counts


@dataclass(frozen=True)
class Deleted:
    job: Job  # as it was
    photo_removed: bool  # False: another job, portfolio, profile or review uses the image


def delete_job(conn: sqlite3.Connection, images_dir: Path, job_id: str) -> Deleted:
    """Delete a finished job; its stored image goes too when nothing else uses it
    (images.forget_if_unreferenced).

    Refused (`InUse`) while the job is queued or running (the worker holds it) and when
    reviews were written of it: a review is a person's correction and may be training
    data (storage/reviews.py), so deleting the critique would take theirs with it."""
    job = require_job(conn, job_id)
    if not job.finished:
        raise InUse(f"job {job.id} is {job.status}; delete it once it has finished")
    reviews = conn.execute("SELECT count(*) FROM reviews WHERE job_id = ?", (job.id,)).fetchone()
    if reviews[0]:
        raise InUse(
            f"job {job.id} has {reviews[0]} review(s), kept as training data; "
            "it cannot be deleted while they exist",
            code="has_reviews",
        )
    conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
    return Deleted(job, forget_if_unreferenced(conn, images_dir, job.image_hash))
