"""Model policies over HTTP: base, fine_tuned and ab_test, with a real LoRA adapter.

The policy gates adapter use: under `base` a `lora` request falls back (no adapter);
under `fine_tuned` it is served by the advisor's active adapter; `ab_test` splits jobs
by a hash of the job id. Every job records its variant and the adapter that served it.
"""

from __future__ import annotations

import types
import uuid

import pytest
from fastapi.testclient import TestClient
from service_helpers import photo_bytes, tiny_backend_for, tiny_settings, upload, wait_for_job

from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions
from mondrian.service.policy import ModelPolicy
from mondrian.storage import adapters
from mondrian.storage import jobs as job_store
from mondrian.storage.bootstrap import open_state

pytestmark = pytest.mark.model

LORA = {"advisor": "ansel", "mode": "lora"}


@pytest.fixture(scope="module")
def backend(tiny_model, tmp_path_factory):
    # Its own backend: adapters stay resident, and other modules expect none.
    return tiny_backend_for(tiny_settings(tmp_path_factory.mktemp("unused"), tiny_model))


@pytest.fixture(scope="module")
def adapter_dir(backend, tiny_model, tmp_path_factory, random_adapter_factory):
    out = tmp_path_factory.mktemp("adapter") / "ansel-v1"
    return random_adapter_factory(tiny_model, out, 1, backend.fingerprint)


@pytest.fixture
def make_client(backend, tiny_model, adapter_dir, tmp_path):
    """`make_client(policy, split)`: a running app whose home has ansel@v1 active."""
    settings = tiny_settings(tmp_path / "home", tiny_model)
    with open_state(settings) as db:
        version = db.write(adapters.register_adapter, "ansel", adapter_dir, str(tiny_model))
        db.write(adapters.activate, "ansel", version)
    clients = []

    def make(policy: str, split: float = 0.5) -> TestClient:
        options = ServiceOptions(model_policy=policy, ab_split=split, idle_poll_s=0.05)
        client = TestClient(create_app(settings, backend, options=options))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _job(client, response) -> dict:
    return wait_for_job(client, response.headers["X-Job-ID"])


def test_base_policy_never_uses_the_adapter(make_client):
    client = make_client("base")
    assert client.get("/health").json()["policy"] == {"name": "base"}
    response = client.post("/analyze", files=upload(photo_bytes()), data=LORA)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Variant"] == "base"
    assert response.headers["X-Requested-Mode"] == "lora"
    # lora is refused for the base variant; no portfolio is indexed, so rag cannot serve.
    assert response.headers["X-Analysis-Mode"] == "baseline" == body["mode_used"]
    assert body["model"]["adapter"] is None and body["model"]["variant"] == "base"
    job = _job(client, response)
    assert (job["variant"], job["adapter"]) == ("base", None)


def test_fine_tuned_policy_serves_the_active_adapter(make_client):
    client = make_client("fine_tuned")
    response = client.post("/analyze", files=upload(photo_bytes()), data=LORA)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Variant"] == "fine_tuned"
    assert response.headers["X-Analysis-Mode"] == "lora" == body["mode_used"]
    assert response.headers["X-Adapter-Version"] == "ansel@v1" == body["model"]["adapter"]
    job = _job(client, response)
    assert (job["variant"], job["adapter"]) == ("fine_tuned", "ansel@v1")
    assert "ansel@v1" in client.get("/health").json()["adapters"]

    # The mode asked is the mode served: baseline stays on the base weights.
    plain = client.post("/analyze", files=upload(photo_bytes()), data={"advisor": "ansel"})
    assert plain.headers["X-Analysis-Mode"] == "baseline"
    assert plain.json()["model"]["adapter"] is None
    assert _job(client, plain)["adapter"] is None


def test_ab_test_assigns_by_job_id_and_reports_both_arms(make_client, monkeypatch):
    # Job ids from a counter instead of uuid4, so the assignment below is known ahead.
    counter = iter(range(1, 1000))
    fake_uuid = types.SimpleNamespace(uuid4=lambda: uuid.UUID(int=next(counter)))
    monkeypatch.setattr(job_store, "uuid", fake_uuid)
    policy = ModelPolicy("ab_test", 0.5)
    ids = [uuid.UUID(int=i).hex for i in range(1, 7)]
    expected = {job_id: policy.variant_for(job_id) for job_id in ids}
    assert set(expected.values()) == {"base", "fine_tuned"}, "pick ids that give both arms"

    client = make_client("ab_test", 0.5)
    assert client.get("/health").json()["policy"] == {"name": "ab_test", "ab_split": 0.5}
    accepted = [client.post("/jobs", files=upload(photo_bytes()), data=LORA) for _ in ids]
    assert [r.json()["id"] for r in accepted] == ids
    for response in accepted:
        assert response.json()["variant"] == expected[response.json()["id"]]

    for job_id in ids:
        job = wait_for_job(client, job_id)
        assert job["status"] == "done" and job["variant"] == expected[job_id]
        if expected[job_id] == "fine_tuned":
            assert (job["mode_used"], job["adapter"]) == ("lora", "ansel@v1")
        else:
            assert (job["mode_used"], job["adapter"]) == ("baseline", None)

    report = {v["variant"]: v for v in client.get("/ab/report").json()["variants"]}
    tuned = sum(v == "fine_tuned" for v in expected.values())
    assert report["fine_tuned"]["jobs"] == tuned
    assert report["base"]["jobs"] == len(ids) - tuned
    assert report["fine_tuned"]["adapters"] == {"ansel@v1": tuned}
    assert report["base"]["adapters"] == {}
    assert report["fine_tuned"]["modes_used"] == {"lora": tuned}
    for arm in report.values():
        assert arm["validity_rate"] == 1.0
        assert arm["latency_p50_s"] <= arm["latency_p95_s"]
        assert arm["mean_overall_score"] is not None
