"""The job-table writes of the service: admission against a bounded queue, with the A/B
variant drawn from the job id, and the photo stored only for work that was admitted; and
what a refusal says (`QueueFull` with its Retry-After estimate, `ShuttingDown`).

Each function runs inside `Database.write`'s transaction (call it as `db.write(fn, ...)`),
so a check and the writes that follow it are atomic, across processes too: a request
refused for a full queue leaves neither a job nor an image behind.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from mondrian.errors import Unavailable
from mondrian.service.policy import ModelPolicy
from mondrian.storage import images, jobs
from mondrian.storage.jobs import Job

# Until a job has been timed, Retry-After assumes this many seconds per waiting job.
DEFAULT_JOB_S = 5.0
MAX_RETRY_AFTER_S = 600


class QueueFull(Unavailable):
    code = "queue_full"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(Unavailable):
    code = "shutting_down"


def estimated_wait(job_s: float, depth: int, workers: int) -> int:
    """Whole seconds, 1 to MAX_RETRY_AFTER_S, for `depth` jobs of `job_s` each on `workers`
    threads running side by side (batched)."""
    seconds = job_s * max(1, depth) / max(1, workers)
    return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds))))


class QueueAtCapacity(Exception):
    """Raised inside `admit`; the worker turns it into the user-facing `QueueFull`."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"{depth} jobs are waiting")
        self.depth = depth


@dataclass(frozen=True)
class Upload:
    """A checked photo to file with its job: the working copy's bytes and their shape."""

    data: bytes
    mime: str
    width: int
    height: int
    name: str | None = None  # the file's name as the client sent it (history shows it)


def queued_count(conn: sqlite3.Connection) -> int:
    return jobs.count_by_status(conn)["queued"]


def check_capacity(conn: sqlite3.Connection, capacity: int) -> None:
    """`QueueAtCapacity` if `capacity` jobs already wait."""
    depth = queued_count(conn)
    if depth >= capacity:
        raise QueueAtCapacity(depth)


def admit(
    conn: sqlite3.Connection,
    advisor_id: str,
    image: str | Upload,
    mode: str,
    model_id: str,
    policy: ModelPolicy,
    capacity: int,
    images_dir: Path | None = None,
) -> Job:
    """A new queued job with its variant, unless `capacity` jobs are already waiting.

    `image` is a stored image's hash, or an `Upload` stored here (under `images_dir`) once
    the job is admitted, in the same transaction as the job."""
    check_capacity(conn, capacity)
    photo_name = None
    if isinstance(image, Upload):
        photo_name = image.name
        if images_dir is None:
            raise ValueError("an Upload needs the images directory to be stored in")
        image_hash = images.store_image(
            conn, images_dir, image.data, image.mime, image.width, image.height
        )
    else:
        image_hash = image
    job_id = jobs.new_job_id()
    return jobs.create_job(
        conn,
        advisor_id,
        image_hash,
        mode,
        model_id,
        variant=policy.variant_for(job_id),
        job_id=job_id,
        photo_name=photo_name,
    )
