"""The worker's heartbeat on a queue that replicas may share (docs/storage.md).

Each claimed job carries a lease (storage/job_leases.py `claim_next_job`). This thread renews the
leases of the jobs running in this process every third of the lease, and on a shared
database (PostgreSQL) also:

- takes back the jobs of replicas that died: their leases ran out, so they are re-queued
  or, after `max_attempts`, failed with a reason (`job_leases.recover_expired`);
- answers the callers waiting here (`POST /analyze`) for jobs that another replica
  claimed and finished: the job went to whichever worker claimed it first.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from mondrian.errors import MondrianError
from mondrian.storage import job_leases, jobs

if TYPE_CHECKING:
    from mondrian.service.worker import Worker

log = logging.getLogger(__name__)


class FailedElsewhere(MondrianError):
    """A job a caller waited for here failed on another replica; its recorded reason."""

    code = "job_failed"
    http_status = 500


class Heartbeat:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.lease_s = worker.options.job_lease_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mondrian-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        renew_every = self.lease_s / 3
        tick = min(renew_every, self.worker.options.idle_poll_s)
        last = time.monotonic()
        while not self._stop.wait(tick):
            if self.worker.db.shared:
                try:
                    self.settle_waiters()
                except Exception:
                    log.exception("could not look up the jobs callers wait for; retrying")
            if time.monotonic() - last < renew_every:
                continue
            last = time.monotonic()
            try:
                self.renew()
                if self.worker.db.shared:
                    self.take_back()
            except Exception:
                log.exception("could not renew job leases; retrying")

    def renew(self) -> None:
        worker = self.worker
        running = worker.running_jobs
        lost = worker.db.write(job_leases.renew_leases, running, self.lease_s, worker.owner)
        for job_id in set(lost) & set(worker.running_jobs):
            log.warning("job %s: this server's lease on it ran out (a stall?)", job_id)

    def take_back(self) -> None:
        worker = self.worker
        recovered = worker.db.write(job_leases.recover_expired, worker.options.max_attempts)
        if recovered.requeued or recovered.failed:
            log.warning(
                "a replica stopped: %d job(s) re-queued, %d failed (attempts exhausted)",
                len(recovered.requeued),
                len(recovered.failed),
            )
            worker.wake(len(recovered.requeued))

    def settle_waiters(self) -> None:
        """The callers waiting here for jobs that finished elsewhere get the outcome."""
        worker = self.worker
        waiting = worker.waiting_elsewhere()
        if not waiting:
            return
        with worker.db.read() as conn:
            found = [jobs.get_job(conn, job_id) for job_id in waiting]
        for job in found:
            if job is None or not job.finished:
                continue
            if job.status == "done":
                worker.resolve(job.id, result=job.analysis())
            else:
                worker.resolve(job.id, error=FailedElsewhere(job.error or "the job failed"))
