"""The bounded queue (503 + Retry-After when full) and recovery after a restart."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from backend_fakes import (
    CrashingBackend,
    EchoBackend,
    GatedBackend,
    RecordingBackend,
    WarmingBackend,
)
from mondrian.schema import example_critique
from mondrian.service.admission import MAX_RETRY_AFTER_S, estimated_wait
from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions
from mondrian.storage import images, job_leases, jobs
from mondrian.storage.bootstrap import open_state

pytestmark = pytest.mark.model


def _metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no sample {name}")


def test_full_queue_answers_503_with_retry_after(tiny_backend, tiny_model, tmp_path):
    gated = GatedBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    app = create_app(settings, gated, options=ServiceOptions(queue_size=1, idle_poll_s=0.05))
    form = {"advisor": "ansel"}
    with TestClient(app) as client:
        try:
            first = client.post("/jobs", files=upload(photo_bytes()), data=form)
            assert first.status_code == 202
            assert gated.entered.wait(30), "the worker never started the first job"
            # The first job holds the model; the second waits and fills the queue.
            second = client.post("/jobs", files=upload(photo_bytes("coffee")), data=form)
            assert second.status_code == 202
            a, b = first.json()["id"], second.json()["id"]

            for endpoint in ("/jobs", "/analyze"):
                refused = client.post(endpoint, files=upload(photo_bytes("rocket")), data=form)
                assert_error(refused, 503, "queue_full", "full")
                assert int(refused.headers["Retry-After"]) >= 1

            health = client.get("/health").json()["queue"]
            assert (health["depth"], health["capacity"], health["running"]) == (1, 1, a)
            metrics = client.get("/metrics").text
            assert _metric(metrics, "mondrian_queue_depth") == 1
            assert _metric(metrics, "mondrian_jobs_running") == 1
            assert _metric(metrics, "mondrian_queue_rejections_total") == 2

            # Neither job is finished: no report, no review yet.
            assert_error(client.get(f"/jobs/{b}/report"), 409, "not_done", "queued")
            review = {"critique": example_critique().model_dump(mode="json")}
            assert_error(client.post(f"/jobs/{a}/review", json=review), 409, "not_finished")
        finally:
            gated.gate.set()
        assert wait_for_job(client, a)["status"] == "done"
        assert wait_for_job(client, b)["status"] == "done"
        # Room again.
        again = client.post("/analyze", files=upload(photo_bytes("rocket")), data=form)
        assert again.status_code == 200, again.text
        with app.state.mondrian.db.read() as conn:
            # The refused requests left no job behind.
            assert jobs.count_by_status(conn) == {"queued": 0, "running": 0, "done": 3, "failed": 0}


def test_analyze_that_waits_too_long_gives_504_and_the_job_goes_on(
    tiny_backend, tiny_model, tmp_path
):
    gated = GatedBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    options = ServiceOptions(analyze_timeout_s=0.2, idle_poll_s=0.05)
    with TestClient(create_app(settings, gated, options=options)) as client:
        try:
            response = client.post(
                "/analyze", files=upload(photo_bytes()), data={"advisor": "ansel"}
            )
            assert_error(response, 504, "timeout", "/jobs/")
            job_id = response.headers["X-Job-ID"]
        finally:
            gated.gate.set()
        assert wait_for_job(client, job_id)["status"] == "done"


def test_a_crashing_model_fails_the_job_not_the_service(tiny_backend, tiny_model, tmp_path):
    crashing = CrashingBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    with TestClient(
        create_app(settings, crashing, options=ServiceOptions(idle_poll_s=0.05))
    ) as client:
        form = {"advisor": "ansel"}
        response = client.post("/analyze", files=upload(photo_bytes()), data=form)
        assert_error(response, 500, "internal_error", response.headers["X-Job-ID"])
        assert "secret detail" not in response.text
        job = wait_for_job(client, response.headers["X-Job-ID"])
        assert job["status"] == "failed" and "RuntimeError" in job["error"]
        assert "secret detail" not in job["error"]
        again = client.post("/analyze", files=upload(photo_bytes()), data=form)
        assert again.status_code == 200, again.text
        assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("concurrency", [1, 2])
def test_the_backend_warms_up_before_the_first_request(
    concurrency, tiny_backend, tiny_model, tmp_path
):
    """`mondrian serve` compiles before it answers (the fast path's graphs): the start
    calls warm_up once, on the thread that runs the batches, and the first job then
    generates."""
    warming = WarmingBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    options = ServiceOptions(concurrency=concurrency, idle_poll_s=0.05)
    with TestClient(create_app(settings, warming, options=options)) as client:
        assert [name for name, _ in warming.calls] == ["warm_up"]
        if concurrency > 1:  # the batcher's dispatcher, where every model call runs
            assert warming.calls[0][1] == "mondrian-batcher"
        response = client.post("/analyze", files=upload(photo_bytes()), data={"advisor": "ansel"})
        assert response.status_code == 200, response.text
    assert [name for name, _ in warming.calls] == ["warm_up", "generate"]


def test_restart_runs_queued_and_recovers_running_jobs(tiny_backend, tiny_model, tmp_path):
    settings = tiny_settings(tmp_path / "home", tiny_model)
    # The state a crashed service leaves behind, made through storage directly.
    with open_state(settings) as db:
        image_hash = db.write(
            images.store_image, settings.images_dir, photo_bytes(), "image/jpeg", 160, 106
        )
        # Running on its second attempt: the crash before this one re-queued it once.
        exhausted = db.write(jobs.create_job, "ansel", image_hash, "baseline", "tiny")
        db.write(jobs.start_job, exhausted.id)
        db.write(job_leases.requeue_or_fail_running, 5)
        db.write(jobs.start_job, exhausted.id)
        # Running on its first attempt, and one still queued.
        running = db.write(jobs.create_job, "fan_ho", image_hash, "rag", "tiny")
        db.write(jobs.start_job, running.id)
        queued = db.write(jobs.create_job, "ansel", image_hash, "lora", "tiny")
        with db.read() as conn:
            before = {j.id: (j.status, j.attempts) for j in jobs.list_jobs(conn)}
    assert before == {
        exhausted.id: ("running", 2),
        running.id: ("running", 1),
        queued.id: ("queued", 0),
    }

    app = create_app(
        settings, tiny_backend, options=ServiceOptions(max_attempts=2, idle_poll_s=0.05)
    )
    with TestClient(app) as client:
        final = {job_id: wait_for_job(client, job_id) for job_id in before}
        assert client.get("/health").json()["queue"]["depth"] == 0
    assert final[queued.id]["status"] == "done"
    assert final[queued.id]["result"]["mode_requested"] == "lora"
    assert (final[running.id]["status"], final[running.id]["attempts"]) == ("done", 2)
    assert final[exhausted.id]["status"] == "failed"
    assert "restart" in final[exhausted.id]["error"]
    with open_state(settings) as db, db.read() as conn:
        assert jobs.count_by_status(conn) == {"queued": 0, "running": 0, "done": 2, "failed": 1}


def test_jobs_that_wait_for_the_model_share_the_next_batch(tiny_backend, tiny_model, tmp_path):
    recording = RecordingBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    # A window far longer than a tiny job takes even on a loaded machine: a batch held for
    # it shows in the job's own run time, whatever the machine's speed.
    window_s = 60.0
    options = ServiceOptions(concurrency=4, idle_poll_s=0.05, batch_wait_ms=window_s * 1000)
    form = {"advisor": "ansel"}
    with TestClient(create_app(settings, recording, options=options)) as client:
        try:
            first = client.post("/jobs", files=upload(photo_bytes()), data=form).json()["id"]
            # The first job holds the model; the next three wait for it inside the batcher.
            assert recording.entered.wait(30)
            ids = [first] + [
                client.post("/jobs", files=upload(photo_bytes(name)), data=form).json()["id"]
                for name in ("coffee", "rocket", "astronaut")
            ]
            batcher = app_batcher(client)
            for _ in range(600):
                if batcher.queued() == 3:
                    break
                time.sleep(0.05)
            assert batcher.queued() == 3
            health = client.get("/health").json()
            assert len(health["queue"]["running_jobs"]) == 4
            assert health["queue"]["running"] == first
            metrics = client.get("/metrics").text
            assert _metric(metrics, "mondrian_jobs_running") == 4
        finally:
            recording.gate.set()
        results = [wait_for_job(client, job_id) for job_id in ids]
        # A job on its own is not held for the window: nothing else is on its way, so its
        # batch closes at once. Held, the job would run for the whole window (the deadline
        # is the batcher's clock), so its run time, claimed to finished, says which.
        alone = client.post("/analyze", files=upload(photo_bytes()), data=form)
        assert alone.status_code == 200, alone.text
        assert run_seconds(wait_for_job(client, alone.headers["X-Job-ID"])) < window_s / 2
    assert [r["status"] for r in results] == ["done"] * 4
    assert recording.sizes == [1, 3, 1]  # the lone job ran in a batch of its own
    for r in results:
        assert set(r["result"]["critique"]) >= {"dimensions", "overall_score"}


def test_a_batch_waits_for_uploads_on_their_way_and_jobs_not_yet_started():
    from mondrian.service.metrics import ServiceMetrics
    from mondrian.service.worker import Worker

    class Ctx:
        db = None
        backend = EchoBackend()  # only its answer budget is read

    worker = Worker(Ctx(), None, ServiceMetrics(), ServiceOptions())
    assert worker.batch_ready(0)
    upload_a, upload_b = worker.arrival(), worker.arrival()
    worker._running["job-1"] = 0.0  # running, and waiting in the batch (waiting=1)
    assert not worker.batch_ready(1), "two uploads are still arriving"
    upload_a.close()
    upload_a.close()  # idempotent
    assert not worker.batch_ready(1)
    assert worker.expected_calls() == 2  # one running, one upload on its way
    upload_b.close()
    assert worker.batch_ready(1)
    assert not worker.batch_ready(0), "a running job has not reached the batch yet"


def app_batcher(client):
    from mondrian.service.batching import BatchingBackend

    backend = client.app.state.mondrian.backend
    assert isinstance(backend, BatchingBackend)
    return backend


def _stored(db) -> int:
    with db.read() as conn:
        return conn.execute("SELECT count(*) FROM images").fetchone()[0]


def run_seconds(job: dict) -> float:
    """A job's run, claimed to finished, from `GET /jobs/{id}`'s timestamps."""
    started, finished = (
        datetime.fromisoformat(job[key].replace("Z", "+00:00"))
        for key in ("started_at", "finished_at")
    )
    return (finished - started).total_seconds()


def test_a_refused_request_is_neither_decoded_nor_stored(
    tiny_backend, tiny_model, tmp_path, monkeypatch
):
    from mondrian.service import worker as worker_module

    # Until a job is timed the estimate assumes DEFAULT_JOB_S per job; set far above any
    # tiny job's run (even on a loaded machine), so that the estimate after the jobs ran
    # can only be close to their measured times if it follows them.
    default_job_s = 100.0
    monkeypatch.setattr(worker_module, "DEFAULT_JOB_S", default_job_s)
    gated = GatedBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    app = create_app(settings, gated, options=ServiceOptions(queue_size=3, idle_poll_s=0.05))
    form = {"advisor": "ansel"}
    with TestClient(app) as client:
        db = app.state.mondrian.db
        try:
            running = client.post("/jobs", files=upload(photo_bytes()), data=form)
            assert gated.entered.wait(30), "the worker never started the first job"
            ids = [running.json()["id"]]
            for name in ("coffee", "rocket", "astronaut"):
                queued = client.post("/jobs", files=upload(photo_bytes(name)), data=form)
                assert queued.is_success, queued.text
                ids.append(queued.json()["id"])
            stored = _stored(db)
            files = sorted(settings.images_dir.rglob("*"))
            # Garbage that a decode would answer 422: the 503 shows nothing decoded it.
            for endpoint in ("/jobs", "/analyze"):
                garbage = client.post(endpoint, files=upload(b"not a photo at all"), data=form)
                assert_error(garbage, 503, "queue_full", "full")
                photo = upload(photo_bytes("chelsea") + b"\0")  # new bytes
                refused = client.post(endpoint, files=photo, data=form)
                assert_error(refused, 503, "queue_full")
                # The wait for 3 queued jobs with no job timed yet, on one thread.
                assert refused.headers["Retry-After"] == str(estimated_wait(default_job_s, 3, 1))
            assert _stored(db) == stored and sorted(settings.images_dir.rglob("*")) == files
        finally:
            gated.gate.set()
        ran = [wait_for_job(client, job_id) for job_id in ids]
        assert [job["status"] for job in ran] == ["done"] * 4
        # Jobs have been timed now: the estimate is 3 jobs at a moving average of their run
        # times, so it lies within what the shortest and the longest took (with a margin
        # for the worker's clock starting after the claim's timestamp).
        took = [run_seconds(job) for job in ran]
        estimate = app.state.mondrian.worker.retry_after(3)
        low = estimated_wait(max(0.0, min(took) - 0.5), 3, 1)
        high = estimated_wait(max(took) + 0.5, 3, 1)
        assert low <= estimate <= high, (estimate, took)
        assert estimate < estimated_wait(default_job_s, 3, 1)


def test_the_estimated_wait_follows_depth_time_and_threads():
    assert estimated_wait(2.0, 6, 1) == 12
    assert estimated_wait(2.0, 6, 4) == 3
    assert estimated_wait(0.01, 1, 8) == 1  # never 0
    assert estimated_wait(60.0, 10**6, 1) == MAX_RETRY_AFTER_S


def test_start_removes_images_nothing_refers_to(tiny_backend, tiny_model, tmp_path):
    settings = tiny_settings(tmp_path / "home", tiny_model)
    with open_state(settings) as db:

        def store(name: str) -> str:
            return db.write(
                images.store_image, settings.images_dir, photo_bytes(name), "image/jpeg", 9, 9
            )

        used, orphan, fresh = store("chelsea"), store("coffee"), store("rocket")
        db.write(jobs.create_job, "ansel", used, "baseline", "tiny")
        db.write(
            lambda conn: conn.execute(
                "UPDATE images SET created_at = '2000-01-01T00:00:00.000000Z' WHERE hash != ?",
                (fresh,),
            )
        )
        with db.read() as conn:
            orphan_file = images.image_path(conn, settings.images_dir, orphan)
        stray = settings.images_dir / "ab" / ("ab" * 32 + ".jpg")
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"left by a rolled-back write")
        for path in (orphan_file, stray):
            os.utime(path, (0, 0))
    with TestClient(create_app(settings, tiny_backend, options=ServiceOptions())):
        pass
    with open_state(settings) as db, db.read() as conn:
        assert images.get_image(conn, used) is not None
        # Stored a moment ago, possibly by a command about to queue it: kept for now.
        assert images.get_image(conn, fresh) is not None
        assert images.get_image(conn, orphan) is None
    assert not orphan_file.exists() and not stray.exists()


def test_uploads_are_decoded_a_few_at_a_time(tiny_backend, tiny_model, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from mondrian.service.routes import analyze

    real_read = analyze.read_image
    inside, peak, lock = 0, 0, threading.Lock()

    def slow_read(*args, **kwargs):
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        try:
            time.sleep(0.3)  # long enough for all six to be waiting
            return real_read(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(analyze, "read_image", slow_read)
    settings = tiny_settings(tmp_path / "home", tiny_model, decode_concurrency=2)
    with TestClient(create_app(settings, tiny_backend, options=ServiceOptions())) as client:

        def post(i: int) -> int:
            photo = upload(photo_bytes() + bytes([i]))  # six different uploads
            return client.post("/jobs", files=photo, data={"advisor": "ansel"}).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(post, range(6)))
    assert statuses == [202] * 6
    assert peak == 2


def test_a_job_a_shutdown_interrupts_is_queued_again_without_costing_an_attempt(
    tiny_backend, tiny_model, tmp_path
):
    settings = tiny_settings(tmp_path / "home", tiny_model).model_copy(
        update={"shutdown_grace_s": 0.0}
    )
    gated = GatedBackend(tiny_backend)
    app = create_app(settings, gated, options=ServiceOptions(idle_poll_s=0.05))
    with TestClient(app) as client:
        response = client.post(
            "/jobs", files=upload(photo_bytes()), data={"advisor": "ansel", "mode": "baseline"}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert gated.entered.wait(30), "the job never reached the model"
        worker = client.app.state.mondrian.worker
        # The shutdown's grace is over before the model writes a token: the first token
        # meets a stopping worker, which interrupts the job.
        stopper = threading.Thread(target=worker.stop, kwargs={"grace": 0.0})
        stopper.start()
        deadline = time.monotonic() + 10
        while not worker.interrupting and time.monotonic() < deadline:
            time.sleep(0.01)
        gated.gate.set()
        stopper.join(60)
    with open_state(settings) as db, db.read() as conn:
        job = jobs.require_job(conn, job_id)
    assert (job.status, job.attempts, job.progress) == ("queued", 0, 0)
    assert "interrupted by a shutdown" in job.error
