"""One worker thread that owns the model, fed by a bounded queue of jobs in SQLite.

The job table is the queue: a request inserts a `queued` row (refused with `QueueFull`
when `queue_size` rows already wait: checked before its upload is read, and again,
atomically with storing the photo, when it is admitted), and the worker claims the
oldest one, runs it and records `done` or `failed`. Keeping the queue in the database,
not in memory, is what makes restarts safe: on start the worker puts jobs a dead process
left `running` back in the queue (or fails them once they have had `max_attempts` runs),
then works through everything queued. Start also removes stored images that nothing
refers to any more (storage/images.py `remove_unreferenced`).

Several replicas may share one PostgreSQL queue (docs/storage.md): each claimed job
carries a lease that the heartbeat (service/leases.py) renews while the job runs; it also
takes back a dead replica's jobs once their leases run out. On a database shared that way
start-up recovery takes only those: the other `running` jobs belong to live replicas.

`ServiceOptions.concurrency` threads run jobs side by side (one by default). With more than
one, the app hands them a `BatchingBackend` (service/batching.py): their generations are
batched onto the model, which still only ever sees one thread, the batcher's.

Synchronous callers (`POST /analyze`) get a Future when they submit; the worker resolves
it with the result, or with the exception that failed the job.

(Past 400 lines: the lifecycle, the submit path and the run loop share one lock and its
invariants, so they stay together; the lease heartbeat is service/leases.py.)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from mondrian.analysis import run_job
from mondrian.context import Context
from mondrian.errors import InvalidInput, MondrianError
from mondrian.schema import AnalysisResult
from mondrian.service import admission
from mondrian.service.admission import DEFAULT_JOB_S, QueueFull, ShuttingDown, estimated_wait
from mondrian.service.leases import Heartbeat
from mondrian.service.metrics import ServiceMetrics
from mondrian.service.options import ServiceOptions
from mondrian.service.policy import ModelPolicy
from mondrian.service.progress import ExpectedTokens, progress_value
from mondrian.service.stages import LiveStages, StageBackend, passes_for
from mondrian.storage import images, job_leases, jobs
from mondrian.storage.job_leases import Recovery
from mondrian.storage.jobs import Job

log = logging.getLogger(__name__)


class _Interrupted(BaseException):
    """Raised from the token callback to stop a generation at shutdown. A BaseException,
    so that no `except Exception` on the way (strategy, backend) swallows it."""


class Arrival:
    """A request the service has taken in but not yet started as a job: its upload may still
    be arriving. Open tickets tell a filling batch that more work is on its way. Closed
    (idempotently) when its job starts, or when the request ends without one."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._open = True
        with worker._lock:
            worker._incoming += 1

    def close(self) -> None:
        with self._worker._lock:
            if self._open:
                self._open = False
                self._worker._incoming -= 1


@dataclass(frozen=True)
class Submission:
    job: Job
    done: Future[AnalysisResult] | None  # set when the caller asked to wait


class _Progress:
    """The token callback: counts tokens and writes the job's progress now and then, against
    the expected answer length (service/progress.py)."""

    def __init__(self, worker: Worker, job_id: str, expected: int) -> None:
        self.worker = worker
        self.job_id = job_id
        self.expected = max(1, expected)
        self.finished_passes = 0  # tokens of earlier generate() calls (rag makes two)
        self.current = 0
        self.last_write = time.monotonic()
        self.last_value = 0.0

    @property
    def total(self) -> int:
        return self.finished_passes + self.current

    def __call__(self, _row: int, count: int) -> None:
        if self.worker.interrupting:
            raise _Interrupted
        if count < self.current:  # a new generate() call started counting again
            self.finished_passes += self.current
        self.current = count
        self.worker.stages.tokens(self.job_id, count)
        now = time.monotonic()
        if now - self.last_write < self.worker.options.progress_interval_s:
            return
        value = round(progress_value(self.total, self.expected), 3)
        if value > self.last_value:
            self.last_write, self.last_value = now, value
            # Not waited for: generation does not stall on the database. The writer runs
            # writes in order, so this lands before the job's finish_job.
            self.worker.db.submit(jobs.set_progress, self.job_id, value)


class Worker:
    def __init__(
        self,
        ctx: Context,
        policy: ModelPolicy,
        metrics: ServiceMetrics,
        options: ServiceOptions,
    ) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.policy = policy
        self.metrics = metrics
        self.options = options
        self._lock = threading.Lock()
        self._waiters: dict[str, Future[AnalysisResult]] = {}
        # Counts submits not yet looked at: a submit is never lost between two idle
        # threads, as a flag set by one and cleared by another could be.
        self._wake = threading.Semaphore(0)
        self._stop = threading.Event()  # interrupt running jobs
        self._draining = threading.Event()  # start no new job
        self._threads: list[threading.Thread] = []
        self._running: dict[str, float] = {}  # job id -> when it started
        self._job_s: float | None = None  # moving average of a job's run time
        self._incoming = 0  # open Arrival tickets
        self._arrivals: dict[str, Arrival] = {}  # job id -> its request's ticket
        self._expected = ExpectedTokens(ctx.backend.answer_budget)  # tokens of an answer
        self.stages = LiveStages()  # what each running job is doing (service/stages.py)
        # Who holds a job's lease: names the replica in a recovered job's error.
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._heartbeat = Heartbeat(self)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Recovery:
        """Recover what a previous process left running, then start the thread."""
        recovery = self._recover_at_start()
        if recovery.requeued or recovery.failed:
            log.warning(
                "after a restart: %d job(s) re-queued, %d failed (attempts exhausted)",
                len(recovery.requeued),
                len(recovery.failed),
            )
        removed = self.db.write(images.remove_unreferenced, self.ctx.settings.images_dir)
        if removed:
            log.info("removed %d stored image(s) no job or portfolio refers to", len(removed))
        self._stop.clear()
        self._draining.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"mondrian-worker-{i}", daemon=True)
            for i in range(self.options.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        self._heartbeat.start()
        return recovery

    def _recover_at_start(self) -> Recovery:
        if self.db.shared:  # other replicas' running jobs are theirs: only expired leases
            return self.db.write(job_leases.recover_expired, self.options.max_attempts)
        return self.db.write(job_leases.requeue_or_fail_running, self.options.max_attempts)

    def stop(self, timeout: float = 30.0, grace: float = 0.0) -> None:
        """Stop: no new job starts; running jobs get `grace` seconds to finish, then are
        interrupted (via the token callback).

        A job interrupted here goes back to the queue, recorded as interrupted and without
        counting the attempt (`job_leases.interrupt_job`); the next start runs it. Waiting
        callers are answered with `ShuttingDown`.
        """
        self._draining.set()
        self._wake.release(max(1, len(self._threads)))
        grace_end = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, grace_end - time.monotonic()))
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            log.warning("the worker did not stop within %.0f s", timeout)
        self._threads = []
        self._heartbeat.stop(max(0.0, deadline - time.monotonic()))
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            _resolve(future, error=ShuttingDown("the service is shutting down; try again"))

    @property
    def stopping(self) -> bool:
        return self._draining.is_set() or self._stop.is_set()

    @property
    def interrupting(self) -> bool:
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    # --- submitting ----------------------------------------------------------------------

    def arrival(self) -> Arrival:
        """A ticket for a request that may become a job (the HTTP layer takes one)."""
        return Arrival(self)

    def submit(
        self,
        advisor_id: str,
        image: str | admission.Upload,
        mode: str,
        *,
        wait: bool,
        arrival: Arrival | None = None,
    ) -> Submission:
        """Queue a job for a stored image (its hash) or an upload, which is stored only if
        the job is admitted; with `wait`, a Future of its result. The request's `arrival`
        ticket stays open until the job starts."""
        if self.stopping:
            raise ShuttingDown("the service is shutting down; try again")
        # The lock spans the insert and the waiter's registration: the worker resolves
        # waiters under the same lock, so it cannot finish the job before anyone waits.
        with self._lock:
            try:
                job = self.db.write(
                    admission.admit,
                    advisor_id,
                    image,
                    mode,
                    self.ctx.backend.model_id,
                    self.policy,
                    self.options.queue_size,
                    self.ctx.settings.images_dir,
                )
            except admission.QueueAtCapacity as full:
                raise self._refuse(full.depth) from None
            future: Future[AnalysisResult] | None = Future() if wait else None
            if future is not None:
                self._waiters[job.id] = future
            if arrival is not None:
                self._arrivals[job.id] = arrival
        self._wake.release()
        return Submission(job=job, done=future)

    def check_capacity(self) -> None:
        """`QueueFull` now if the queue is full: the HTTP layer asks before it reads an
        upload, so a refused request costs no decoding and stores nothing."""
        if self.stopping:
            raise ShuttingDown("the service is shutting down; try again")
        with self.db.read() as conn:
            try:
                admission.check_capacity(conn, self.options.queue_size)
            except admission.QueueAtCapacity as full:
                raise self._refuse(full.depth) from None

    def _refuse(self, depth: int) -> QueueFull:
        self.metrics.rejected.inc()
        return QueueFull(
            f"the queue is full ({depth} jobs waiting); try again later",
            retry_after=self.retry_after(depth),
        )

    def forget(self, job_id: str) -> None:
        """A caller stopped waiting (timeout, disconnect); the job still runs."""
        with self._lock:
            self._waiters.pop(job_id, None)

    def retry_after(self, depth: int) -> int:
        """Seconds for the queue to drain: `depth` waiting jobs at the recent job time (a
        moving average of measured runs), shared by the threads that run them."""
        per_job = self._job_s if self._job_s is not None else DEFAULT_JOB_S
        return estimated_wait(per_job, depth, self.options.concurrency)

    def queue_depth(self) -> int:
        with self.db.read() as conn:
            return admission.queued_count(conn)

    def batch_ready(self, waiting: int) -> bool:
        """For the BatchingBackend: a filling batch is complete once every running job
        waits in it (`waiting` calls) and no request is on its way in (an open Arrival:
        a burst of uploads is still arriving, or a job is queued but not yet started)."""
        with self._lock:
            return waiting >= len(self._running) + self._incoming

    def expected_calls(self) -> int:
        """Jobs running or on their way in: the rows a continuous batch makes room for."""
        with self._lock:
            return len(self._running) + self._incoming

    def waiting_elsewhere(self) -> list[str]:
        """Jobs callers wait for here that this process is not running (service/leases.py
        looks them up: another replica may have run them)."""
        with self._lock:
            return [job_id for job_id in self._waiters if job_id not in self._running]

    def wake(self, jobs_queued: int) -> None:
        """Jobs were queued behind the submit path's back (re-queued by recovery)."""
        self._wake.release(max(1, jobs_queued))

    @property
    def running_jobs(self) -> list[str]:
        """Jobs being run now, the longest-running first."""
        with self._lock:
            return sorted(self._running, key=self._running.__getitem__)

    # --- the thread ----------------------------------------------------------------------

    def _loop(self, index: int) -> None:
        look = True
        while not self.stopping:
            if not look:
                # Woken by a submit; on a timeout only the first thread looks in the
                # database (for jobs another process queued), not all of them.
                look = self._wake.acquire(timeout=self.options.idle_poll_s) or index == 0
                continue
            try:
                job = self.db.write(
                    job_leases.claim_next_job, lease_s=self.options.job_lease_s, owner=self.owner
                )
            except Exception:
                log.exception("could not claim a job; retrying")
                self._stop.wait(self.options.idle_poll_s)
                continue
            if job is None:
                look = False
                continue
            # There may be more: another idle thread looks too.
            self._wake.release()
            try:
                self._run(job)
            except _Interrupted:
                log.warning("job %s interrupted by shutdown; queued for the next start", job.id)
                try:
                    self.db.write(job_leases.interrupt_job, job.id)
                except Exception:  # left running: the next start's recovery re-queues it
                    log.exception("could not record job %s as interrupted", job.id)
                self.resolve(job.id, error=ShuttingDown("the service is shutting down"))
                return

    def _run(self, job: Job) -> None:
        with self._lock:
            self._running[job.id] = time.monotonic()
            self.metrics.running.set(len(self._running))
            arrival = self._arrivals.pop(job.id, None)
        if arrival is not None:
            arrival.close()
        started = time.perf_counter()
        expected = self._expected.for_mode(job.mode_requested)
        progress = _Progress(self, job.id, expected)
        try:
            try:
                result = run_job(self._staged(job), job, progress)
            finally:
                # Before the job is resolved: whoever sees it finished sees no stages held
                # for it (a stream or a test reading them right after the status).
                self.stages.drop(job.id)
        except MondrianError as exc:
            self._fail(job, exc.message, exc, progress, started)
        except Exception as exc:
            # A bug, not the user's doing: the log gets the traceback, the job a reason.
            log.exception("job %s failed", job.id)
            reason = f"internal error ({type(exc).__name__}); see the service log"
            self._fail(job, reason, exc, progress, started)
        else:
            elapsed = time.perf_counter() - started
            self._observe(elapsed)
            labels = (result.mode_used, job.variant)
            self.metrics.analysis_seconds.labels(*labels).observe(elapsed)
            self.metrics.jobs.labels("done", *labels).inc()
            self.metrics.tokens.labels(*labels).inc(progress.total)
            self._expected.record(job.mode_requested, progress.total)
            self.resolve(job.id, result=result)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                self.metrics.running.set(len(self._running))

    def _staged(self, job: Job) -> Context:
        """The context a job runs in: the backend wrapped to mark the job's stages."""
        self.stages.set(job.id, "profiling")
        backend = StageBackend(self.ctx.backend, self.stages, job.id, passes_for(self.ctx, job))
        return dataclasses.replace(self.ctx, backend=backend)

    def _fail(
        self, job: Job, reason: str, exc: BaseException, progress: _Progress, started: float
    ) -> None:
        try:
            self.db.write(jobs.fail_job, job.id, reason)
        except InvalidInput:
            # Finished meanwhile by another replica, which took the job over when this
            # one's lease ran out (a stall longer than the lease): its outcome stands.
            log.warning("job %s was finished by another server; keeping its outcome", job.id)
            self._heartbeat.settle_waiters()
            return
        except Exception:
            log.exception("could not record the failure of job %s", job.id)
        self._observe(time.perf_counter() - started)
        self.metrics.jobs.labels("failed", job.mode_requested, job.variant).inc()
        self.metrics.tokens.labels(job.mode_requested, job.variant).inc(progress.total)
        self.resolve(job.id, error=exc)

    def _observe(self, seconds: float) -> None:
        self._job_s = seconds if self._job_s is None else 0.8 * self._job_s + 0.2 * seconds

    def resolve(
        self,
        job_id: str,
        result: AnalysisResult | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._lock:
            future = self._waiters.pop(job_id, None)
        if future is not None:
            _resolve(future, result, error)


def _resolve(
    future: Future[AnalysisResult],
    result: AnalysisResult | None = None,
    error: BaseException | None = None,
) -> None:
    # The waiter may have given up (its asyncio wrapper cancels the Future).
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass
