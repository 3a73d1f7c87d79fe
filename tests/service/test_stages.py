"""A running job's stage (service/stages.py) and how the events stream carries it
(service/routes/events.py): the stages of each pass, a job's stages end to end, and a
stream that ends when its client goes away while the job still runs."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import photo_bytes, tiny_settings, upload, wait_for_job

from backend_fakes import GatedBackend, PeekingBackend, SlowTokensBackend
from mondrian.backends.protocol import Backend, GenerationRequest
from mondrian.prompts import Prompt
from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions
from mondrian.service.stages import LiveStages, StageBackend, stage_of_phase

FORM = {"advisor": "ansel"}


def request() -> list[GenerationRequest]:
    return [GenerationRequest(prompt=Prompt(system="s", user="u"))]


def test_two_passes_profile_retrieve_then_critique():
    stages = LiveStages()
    inner = PeekingBackend(lambda: stages.get("job").name)
    backend = StageBackend(inner, stages, "job", ("profiling", "critiquing"))
    assert isinstance(backend, Backend)  # every member of the Protocol
    stages.set("job", "profiling")
    backend.generate(request())
    assert stages.get("job").name == "retrieving"  # between rag's passes
    backend.generate(request())
    assert inner.peeked == ["profiling", "critiquing"]
    assert stages.get("job").name == "critiquing"  # the last pass: no retrieving after it
    stages.tokens("job", 7)
    assert stages.get("job").tokens == 7
    stages.drop("job")
    assert stages.get("job") is None and len(stages) == 0
    stages.tokens("job", 8)  # a late token of a dropped job records nothing
    assert stages.get("job") is None


def test_one_pass_is_the_critique_and_old_phases_map():
    stages = LiveStages()
    inner = PeekingBackend(lambda: stages.get("job").name)
    backend = StageBackend(inner, stages, "job", ("critiquing",))
    stages.set("job", "profiling")
    backend.generate(request())
    backend.generate(request())  # a retry past the plan stays the critique
    assert inner.peeked == ["critiquing", "critiquing"]
    assert [stage_of_phase(p) for p in ("queued", "preparing", "generating", "done")] == [
        "queued",
        "profiling",
        "critiquing",
        "done",
    ]


def parse_events(text: str) -> list[dict]:
    return [
        json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")
    ]


@pytest.mark.model
def test_a_jobs_stream_carries_its_stages_and_tokens(tiny_backend, tiny_model, tmp_path):
    app = create_app(tiny_settings(tmp_path / "home", tiny_model), SlowTokensBackend(tiny_backend))
    with TestClient(app) as client:
        job_id = client.post("/jobs", files=upload(photo_bytes()), data=FORM).json()["id"]
        events = parse_events(client.get(f"/jobs/{job_id}/events").text)
        assert events[-1]["stage"] == "done" and events[-1]["phase"] == "done"
        order = ["queued", "profiling", "critiquing", "done"]  # baseline: no retrieving
        stages = [e["stage"] for e in events]
        assert set(stages) <= set(order)
        assert stages == sorted(stages, key=order.index)
        tokens = [e["tokens"] for e in events if e["stage"] == "critiquing"]
        assert tokens and max(tokens) > 0 and tokens == sorted(tokens)
        # GET /jobs/{id} keeps the old phase names for API clients.
        assert client.get(f"/jobs/{job_id}").json()["phase"] == "done"


class Leaving:
    """A request whose client leaves after `after` checks."""

    def __init__(self, after: int) -> None:
        self.checks = 0
        self.after = after

    async def is_disconnected(self) -> bool:
        self.checks += 1
        return self.checks > self.after


@pytest.mark.model
def test_a_stream_ends_when_its_client_leaves_and_the_job_runs_on(
    tiny_backend, tiny_model, tmp_path
):
    from mondrian.service.routes.events import stream

    gated = GatedBackend(tiny_backend)
    settings = tiny_settings(tmp_path / "home", tiny_model)
    app = create_app(settings, gated, options=ServiceOptions(idle_poll_s=0.05))
    with TestClient(app) as client:
        try:
            job_id = client.post("/jobs", files=upload(photo_bytes()), data=FORM).json()["id"]
            assert gated.entered.wait(30)
            state = app.state.mondrian

            async def read_all() -> tuple[list[str], int]:
                leaving = Leaving(after=3)
                chunks = [c async for c in stream(leaving, state.db, job_id, state.worker.stages)]
                return chunks, leaving.checks

            chunks, checks = asyncio.run(read_all())
            # The generator returned at the first check after the client left: not at
            # the job's end (the job is still held at the gate).
            assert checks == 4
            assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
            assert chunks[0].startswith("retry:")
            assert all("event: done" not in c for c in chunks)
        finally:
            gated.gate.set()
        assert wait_for_job(client, job_id)["status"] == "done"
        assert len(app.state.mondrian.worker.stages) == 0  # nothing kept for a finished job
