"""The bounded queue (503 + Retry-After when full) and recovery after a restart."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from backend_fakes import CrashingBackend, GatedBackend, RecordingBackend
from mondrian.schema import example_critique
from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions
from mondrian.storage import images, jobs
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
        db.write(jobs.requeue_or_fail_running, 5)
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
    options = ServiceOptions(concurrency=4, idle_poll_s=0.05, batch_wait_ms=5000)
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
                if batcher._queue.qsize() == 3:
                    break
                time.sleep(0.05)
            assert batcher._queue.qsize() == 3
            health = client.get("/health").json()
            assert len(health["queue"]["running_jobs"]) == 4
            assert health["queue"]["running"] == first
            metrics = client.get("/metrics").text
            assert _metric(metrics, "mondrian_jobs_running") == 4
        finally:
            recording.gate.set()
        results = [wait_for_job(client, job_id) for job_id in ids]
        # A job on its own is not held for the window (5 s): nothing else is on its way.
        started = time.monotonic()
        alone = client.post("/analyze", files=upload(photo_bytes()), data=form)
        assert alone.status_code == 200 and time.monotonic() - started < 4.0
    assert [r["status"] for r in results] == ["done"] * 4
    assert recording.sizes == [1, 3, 1]
    for r in results:
        assert set(r["result"]["critique"]) >= {"dimensions", "overall_score"}


def test_a_batch_waits_for_uploads_on_their_way_and_jobs_not_yet_started():
    from mondrian.service.metrics import ServiceMetrics
    from mondrian.service.worker import Worker

    class Ctx:
        db = None

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
