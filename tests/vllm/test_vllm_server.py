"""Mondrian on a real vLLM CPU server (conftest.py starts it): critiques in every mode,
scores calibrated as the transformers backend calibrates them, two adapter versions
trained and published by Mondrian's own pipeline (trained_adapters.py) served in lora
mode and loaded on activation, the base-model refusal, and a server killed mid-job.
Opt-in: `make test-vllm` (marker `vllm`); each answer takes tens of seconds on a 2-core
machine."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from mondrian import adapter_format
from mondrian.analysis import analyze
from mondrian.backends.protocol import GenerationRequest
from mondrian.backends.vllm.adapters import base_entry, check_base
from mondrian.cli.main import main
from mondrian.context import Context
from mondrian.images import read_image_file
from mondrian.portfolio.indexing import index_paths
from mondrian.prompts import critique_prompt
from mondrian.storage import adapters as adapter_store
from mondrian.storage import jobs
from mondrian.storage.advisors import require_advisor
from mondrian.storage.bootstrap import open_state
from mondrian.training.dataset_files import load_split

pytestmark = pytest.mark.vllm


@pytest.fixture
def photo(photos_dir):
    return read_image_file(photos_dir / "chelsea.jpg")


def _register(db, ref_path, tiny_model, activate: bool, advisor: str):
    def write(conn):
        version = adapter_store.register_adapter(
            conn, advisor, ref_path, str(tiny_model), {"base_model": str(tiny_model)}
        )
        if activate:
            adapter_store.activate(conn, advisor, version)
        return version

    return db.write(write)


def _served_loras(server) -> set[str]:
    data = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]
    return {m["id"] for m in data if m.get("parent")}


@pytest.fixture
def trained_state(trained):
    """The trained adapters' home: its registry holds tester@v1 (active) and tester@v2."""
    with open_state(trained.settings) as db:
        with db.read() as conn:
            advisor = require_advisor(conn, trained.advisor_id)
        yield db, advisor


def _ctx(backend, db, trained) -> Context:
    return Context(backend=backend, db=db, settings=trained.settings)


def _training_photo(trained, index: int):
    """Photo `index` of the data set the adapters were trained on."""
    record = load_split(trained.dataset, "train")[index]
    return read_image_file(record["images"][0])


def _same_critique(served, local) -> None:
    """The same answer; expected scores from vLLM's logprobs within float32 rounding of
    those from the logits."""
    assert served.critique.model_dump(exclude={"dimensions"}) == local.critique.model_dump(
        exclude={"dimensions"}
    )
    for (key, mine), (_, theirs) in zip(
        served.critique.dimensions.items(), local.critique.dimensions.items(), strict=True
    ):
        assert (mine.score, mine.comment, mine.recommendation) == (
            theirs.score,
            theirs.comment,
            theirs.recommendation,
        ), key
        assert mine.expected_score is not None, key
        assert mine.expected_score == pytest.approx(theirs.expected_score, abs=2e-4), key


def test_the_answer_is_the_transformers_backends_token_for_token(
    vllm_backend, backend, ansel, photo
):
    # The same checkpoint, prompt, pixels and greedy rule: the same critique, and the same
    # expected scores (from vLLM's logprobs here, from the logits there).
    request = GenerationRequest(prompt=critique_prompt(ansel, photo.image))
    (served,) = vllm_backend.generate([request])
    (local,) = backend.generate([request])
    assert served.critique is not None and served.error is None
    assert served.text == local.text
    assert (served.prompt_tokens, served.new_tokens) == (local.prompt_tokens, local.new_tokens)
    assert served.uncalibrated == {}
    assert served.expected_scores.keys() == local.expected_scores.keys()
    for key, value in local.expected_scores.items():
        assert served.expected_scores[key] == pytest.approx(value, abs=2e-4)


def test_critiques_are_valid_in_baseline_and_rag(
    vllm_backend, db, settings, ansel, photo, photos_dir
):
    ctx = Context(backend=vllm_backend, db=db, settings=settings)
    baseline = analyze(ctx, ansel, photo, "baseline")
    assert baseline.mode_used == "baseline" and baseline.model.backend == "vllm"
    assert all(d.expected_score is not None for _, d in baseline.critique.dimensions.items())

    # rag: the portfolio is profiled through the server, without embeddings (docs/vllm.md),
    # and retrieval ranks by the profiles alone.
    report = index_paths(ctx, ansel, [photos_dir / "chelsea.jpg"])
    assert len(report.indexed) == 1
    rag = analyze(ctx, ansel, photo, "rag")
    assert rag.mode_used == "rag" and rag.references
    assert rag.timings["embed_s"] >= 0


def test_the_trained_adapters_are_in_the_format_train_writes_and_pass_the_base_check(
    vllm_server, backend, adapters, tiny_model
):
    models = httpx.get(f"{vllm_server.url}/v1/models", timeout=10).json()["data"]
    for ref, path in adapters.items():
        meta = adapter_format.read_meta(path)
        assert meta is not None and meta.base_model == str(tiny_model), ref
        assert meta.base_fingerprint == backend.fingerprint, ref
        assert (path / "adapter_config.json").is_file(), ref
        check_base(ref, path, base_entry(models), vllm_server.url)  # no refusal


def test_a_trained_version_serves_in_lora_mode_as_the_transformers_backend_serves_it(
    vllm_backend, trained_backend, trained, trained_state
):
    db, advisor = trained_state
    photo = _training_photo(trained, 0)
    served = analyze(_ctx(vllm_backend, db, trained), advisor, photo, "lora")
    assert served.mode_used == "lora" and served.model.adapter == "tester@v1"
    assert served.model.backend == "vllm"
    baseline = analyze(_ctx(vllm_backend, db, trained), advisor, photo, "baseline")
    assert served.critique != baseline.critique  # the adapter is applied on the server
    local = analyze(_ctx(trained_backend, db, trained), advisor, photo, "lora")
    assert local.model.adapter == "tester@v1"
    _same_critique(served, local)


def test_activating_a_new_version_loads_it_on_the_server(
    vllm_server, vllm_backend, trained_backend, trained, trained_state, monkeypatch, capsys
):
    db, advisor = trained_state
    photo = _training_photo(trained, 1)
    # v1's answer, locally: v2's must differ from it, or the comparison below proves nothing.
    before = analyze(_ctx(trained_backend, db, trained), advisor, photo, "lora")
    assert before.model.adapter == "tester@v1"
    assert "tester@v2" not in _served_loras(vllm_server)
    # `mondrian adapters activate` in the trained adapters' home, as a user would run it.
    monkeypatch.setenv("MONDRIAN_HOME", str(trained.settings.home))
    assert main(["adapters", "activate", "tester@v2", "--vllm-url", vllm_server.url]) == 0
    out = capsys.readouterr().out
    assert f"tester@v2 is loaded on the vLLM server at {vllm_server.url}" in out
    assert "tester@v2" in _served_loras(vllm_server)
    served = analyze(_ctx(vllm_backend, db, trained), advisor, photo, "lora")
    assert served.model.adapter == "tester@v2" and served.critique is not None
    # v2's own weights answer on the server: the transformers backend with v2 agrees.
    local = analyze(_ctx(trained_backend, db, trained), advisor, photo, "lora")
    assert local.model.adapter == "tester@v2" and local.critique != before.critique
    _same_critique(served, local)


def test_an_adapter_of_another_base_is_refused_and_not_activated(
    vllm_server, db, adapters, tiny_model, tmp_path, capsys
):
    other = tmp_path / "other-base"
    shutil.copytree(adapters["tester@v2"], other)
    meta = json.loads((other / "mondrian_adapter.json").read_text())
    # The server's model is a folder readable here: the weights' fingerprints decide
    # (another name alone would pass: the same weights under another name are the same base).
    other_base = {"base_model": "/elsewhere/m", "base_fingerprint": "00000000deadbeef"}
    (other / "mondrian_adapter.json").write_text(json.dumps({**meta, **other_base}))
    # Another advisor's version: no name the server already serves.
    version = _register(db, other, tiny_model, activate=False, advisor="fan_ho")
    ref = f"fan_ho@v{version}"
    assert main(["adapters", "activate", ref, "--vllm-url", vllm_server.url]) == 2
    error = capsys.readouterr().err
    assert "'/elsewhere/m'" in error and f"'{tiny_model}'" in error
    assert "00000000deadbeef" in error and meta["base_fingerprint"] in error
    with db.read() as conn:
        assert adapter_store.get_active(conn, "fan_ho") is None
    assert ref not in _served_loras(vllm_server)


def test_a_server_killed_mid_job_fails_the_job_with_a_clear_error(
    vllm_server, vllm_backend, settings, photos_dir
):
    # Last in the file: the session's server does not come back.
    from fastapi.testclient import TestClient

    from mondrian.service.app import create_app

    app = create_app(settings, backend=vllm_backend)
    # A loopback Host: the service's DNS-rebinding guard refuses TestClient's "testserver".
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").json()["backend_state"] == "ok"
        with (photos_dir / "chelsea.jpg").open("rb") as fh:
            answer = client.post(
                "/jobs", data={"advisor": "ansel"}, files={"image": ("c.jpg", fh, "image/jpeg")}
            )
        assert answer.status_code in (200, 202), answer.text
        job_id = answer.json()["id"]
        _wait(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "running")
        time.sleep(2.0)  # tokens are streaming
        vllm_server.kill()
        _wait(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "failed")
        job = client.get(f"/jobs/{job_id}").json()
        assert "vLLM server" in job["error"] and vllm_server.url in job["error"]
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["backend_state"].startswith("backend_unreachable")
        with (photos_dir / "chelsea.jpg").open("rb") as fh:
            refused = client.post(
                "/analyze", data={"advisor": "ansel"}, files={"image": ("c.jpg", fh, "image/jpeg")}
            )
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["code"] == "backend_unreachable"
    with settings_db(settings) as db, db.read() as conn:
        assert jobs.get_job(conn, job_id).status == "failed"  # recorded, not lost


def settings_db(settings):
    from mondrian.storage.bootstrap import open_state

    return open_state(settings)


def _wait(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")
