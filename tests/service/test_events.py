"""`GET /jobs/{id}/events` (service/routes/events.py): the server-sent events of a job,
read through the TestClient, which returns a stream once it has ended."""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from fastapi.testclient import TestClient
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from backend_fakes import CrashingBackend, GatedBackend
from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions

pytestmark = pytest.mark.model

FORM = {"advisor": "ansel"}


def parse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) per SSE message; comments and `retry:` lines are skipped."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and ": " in line[1:]
        )
        if "data" in fields:
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def test_unknown_job_is_a_json_404(tiny_backend, tiny_model, tmp_path):
    app = create_app(tiny_settings(tmp_path / "home", tiny_model), tiny_backend)
    with TestClient(app) as client:
        assert_error(client.get("/jobs/" + "0" * 32 + "/events"), 404, "unknown_job")
        assert_error(client.get("/jobs/nope/events"), 404, "unknown_job")


def test_stream_follows_a_queued_job_to_done(tiny_backend, tiny_model, tmp_path):
    gated = GatedBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    app = create_app(settings, gated, options=ServiceOptions(idle_poll_s=0.05))
    with TestClient(app) as client:
        opener = threading.Timer(1.5, gated.gate.set)
        try:
            first = client.post("/jobs", files=upload(photo_bytes()), data=FORM).json()["id"]
            assert gated.entered.wait(30), "the worker never started the first job"
            second = client.post("/jobs", files=upload(photo_bytes("coffee")), data=FORM)
            third = client.post("/jobs", files=upload(photo_bytes("rocket")), data=FORM)
            job_id = third.json()["id"]
            opener.start()  # the stream below returns only once the job is final
            response = client.get(f"/jobs/{job_id}/events")
        finally:
            opener.cancel()
            gated.gate.set()
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = parse_events(response.text)
        name, data = events[0]
        # Two jobs ahead: the running first and the queued second.
        assert (name, data["phase"], data["position"]) == ("progress", "queued", 2)
        positions = [d["position"] for n, d in events if d["phase"] == "queued"]
        assert positions == sorted(positions, reverse=True)
        assert [n for n, _ in events].count("done") == 1 and events[-1][0] == "done"
        final = events[-1][1]
        assert final["status"] == "done" and final["progress"] == 1
        assert final["links"]["studio"] == f"/studio/jobs/{job_id}"
        assert client.get(final["links"]["report"]).status_code == 200
        progress = [d["progress"] for _, d in events]
        assert progress == sorted(progress)
        # Events are sent on change only: no two in a row are the same.
        assert all(a != b for a, b in itertools.pairwise(events))
        for other in (first, second.json()["id"]):
            assert wait_for_job(client, other)["status"] == "done"
        # A finished job's stream is one final event.
        again = parse_events(client.get(f"/jobs/{job_id}/events").text)
        assert [n for n, _ in again] == ["done"]


def test_stream_of_a_failed_job_ends_with_the_error(tiny_backend, tiny_model, tmp_path):
    crashing = CrashingBackend(tiny_backend)
    crashing.gate.set()
    settings = tiny_settings(tmp_path / "home", tiny_model)
    app = create_app(settings, crashing, options=ServiceOptions(idle_poll_s=0.05))
    with TestClient(app) as client:
        job_id = client.post("/jobs", files=upload(photo_bytes()), data=FORM).json()["id"]
        events = parse_events(client.get(f"/jobs/{job_id}/events").text)
        name, data = events[-1]
        assert name == "failed" and data["status"] == "failed"
        assert "RuntimeError" in data["error"] and "secret detail" not in data["error"]
