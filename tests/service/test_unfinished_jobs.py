"""Every route that serves a finished job's files answers alike for a job that has none:
409 `not_done` while it is queued or running and after it failed, 404 `unknown_job` only
for a job that does not exist (docs/http.md, "Errors")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from mondrian.storage import jobs as job_store

pytestmark = pytest.mark.model

# The files of one job: the API's report and sidecar, the studio's downloads and exemplar.
JOB_FILES = [
    "/jobs/{id}/report",
    "/jobs/{id}/sidecar.xmp",
    "/studio/jobs/{id}/critique.json",
    "/studio/jobs/{id}/critique.md",
    "/studio/jobs/{id}/critique.pdf",
    "/studio/jobs/{id}/exemplars/0",
]


def assert_not_done(client: TestClient, job_id: str, batch_id: str) -> None:
    for route in JOB_FILES:
        assert_error(client.get(route.format(id=job_id)), 409, "not_done")
    assert_error(client.get(f"/batches/{batch_id}/sidecars.zip"), 409, "not_done")


def test_files_of_an_unfinished_job_are_409_and_of_an_unknown_one_404(
    tiny_backend, tiny_model, tmp_path
):
    from backend_fakes import GatedBackend
    from mondrian.service.app import create_app

    gated = GatedBackend(tiny_backend)
    app = create_app(tiny_settings(tmp_path / "home", tiny_model), gated)
    with TestClient(app) as client:
        try:
            batch = client.post("/batches").json()
            files = upload(photo_bytes(), name="chelsea.jpg")
            running = client.post(batch["links"]["jobs"], files=files, data={"advisor": "ansel"})
            assert running.status_code == 202, running.text
            job_id = running.json()["job"]
            assert gated.entered.wait(30)
            assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
            assert_not_done(client, job_id, batch["id"])
            # A failed job has no critique either (its reason is at GET /jobs/{id}).
            db = app.state.mondrian.db
            with db.read() as conn:
                image_hash = job_store.require_job(conn, job_id).image_hash
            failed = db.write(job_store.create_job, "ansel", image_hash, "baseline", "tiny")
            db.write(job_store.fail_job, failed.id, "the test failed it")
            for route in JOB_FILES:
                assert_error(client.get(route.format(id=failed.id)), 409, "not_done")
        finally:
            gated.gate.set()
        assert wait_for_job(client, job_id)["status"] == "done"
        for route in JOB_FILES[:-1]:  # a baseline critique retrieved no exemplar
            assert client.get(route.format(id=job_id)).status_code == 200, route
        assert_error(client.get(f"/studio/jobs/{job_id}/exemplars/0"), 404, "unknown_exemplar")
        assert client.get(f"/batches/{batch['id']}/sidecars.zip").status_code == 200
        unknown = "0" * 32
        for route in JOB_FILES:
            assert_error(client.get(route.format(id=unknown)), 404, "unknown_job")
        assert_error(client.get(f"/batches/{unknown}/sidecars.zip"), 404, "unknown_batch")
