"""The service with the vllm backend on recorded server answers (replay.py): critiques,
/health's backend state, and a server fault as 503 + Retry-After with the job kept."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from replay import URL, Replay

from mondrian.backends.vllm.backend import VLLMBackend
from mondrian.backends.vllm.client import VLLMClient
from mondrian.config import LOOPBACK_HOSTS, load_settings
from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions

FORM = {"advisor": "ansel", "mode": "baseline"}


@pytest.fixture
def replay() -> Replay:
    return Replay()


def _app(replay: Replay):
    backend = VLLMBackend(
        None,
        client=VLLMClient(URL, timeout_s=5, transport=replay.transport),
        max_text_chars=24,
        max_list_items=2,
    )
    settings = load_settings(allowed_hosts=[*LOOPBACK_HOSTS, "testserver"])
    return create_app(settings, backend, options=ServiceOptions(concurrency=2))


@pytest.fixture
def client(replay, mondrian_home):
    with TestClient(_app(replay)) as test_client:
        yield test_client


def _photo(photos_dir) -> dict:
    return {"image": ("chelsea.jpg", (photos_dir / "chelsea.jpg").read_bytes(), "image/jpeg")}


def test_a_critique_through_the_service_is_the_servers(client, replay, photos_dir):
    answer = client.post("/analyze", data=FORM, files=_photo(photos_dir))
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["model"]["backend"] == "vllm" and result["model"]["base"] == "/tmp/hv/tiny"
    dims = result["critique"]["dimensions"]
    assert all(d["expected_score"] is not None for d in dims.values())
    health = client.get("/health").json()
    assert (health["status"], health["backend_state"], health["backend"]) == ("ok", "ok", "vllm")


def test_an_unreachable_server_is_503_with_retry_after_and_the_job_is_kept(
    client, replay, photos_dir
):
    def refused(*_args):
        raise httpx.ConnectError("connection refused")

    replay.chat = refused
    answer = client.post("/analyze", data=FORM, files=_photo(photos_dir))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    error = answer.json()["error"]
    assert error["code"] == "backend_unreachable" and URL in error["message"]
    job = client.get(f"/jobs/{answer.headers['X-Job-ID']}").json()
    assert job["status"] == "failed" and "cannot be reached" in job["error"]

    replay.health = refused
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert health["backend_state"].startswith("backend_unreachable: the vLLM server at")


def test_the_active_versions_are_loaded_on_the_server_when_the_service_starts(replay, db, tmp_path):
    import json

    from mondrian import adapter_format
    from mondrian.storage import adapters as store

    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    adapter_format.write_meta(folder, adapter_format.AdapterMeta(base_model="/tmp/hv/tiny"))
    db.write(
        lambda c: store.activate(c, "fan_ho", store.register_adapter(c, "fan_ho", folder, "m"))
    )
    with TestClient(_app(replay)) as client:
        loads = [body for _, path, body in replay.sent if path == "/v1/load_lora_adapter"]
        assert loads == [{"lora_name": "fan_ho@v1", "lora_path": str(folder.resolve())}]
        assert client.get("/health").json()["adapters"] == ["fan_ho@v1"]
