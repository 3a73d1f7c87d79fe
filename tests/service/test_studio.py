"""The studio's pages (service/routes/studio.py) through the TestClient: what the server
renders and the policy it sends; tests/browser/ drives the same pages in Chromium."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from mondrian.schema import DIMENSIONS
from mondrian.service.guards import REPORT_CSP, STUDIO_CSP

pytestmark = pytest.mark.model

DISCLAIMER = "Modelled on published work; not endorsed. <b>inert</b>"


@pytest.fixture(scope="module")
def client(tiny_backend, tiny_model, tmp_path_factory):
    from mondrian.service.app import create_app

    home = tmp_path_factory.mktemp("studio") / "home"
    settings = tiny_settings(home, tiny_model, studio_disclaimer=DISCLAIMER)
    with TestClient(create_app(settings, tiny_backend)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def done_job(client) -> str:
    response = client.post(
        "/jobs", files=upload(photo_bytes(), name="chelsea.jpg"), data={"advisor": "ansel"}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert wait_for_job(client, job_id)["status"] == "done"
    return job_id


def test_home_lists_advisors_and_modes_under_the_studio_policy(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == STUDIO_CSP
    html = response.text
    for advisor in client.get("/advisors").json():
        assert f'value="{advisor["id"]}"' in html and advisor["name"] in html
    for mode in ("baseline", "rag", "lora"):
        assert f'<option value="{mode}"' in html
    assert 'src="/static/studio/studio.js"' in html
    # No inline script or style: the policy would block them.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html and "<style" not in html
    assert 'data-max-bytes="' in html and 'for="photo-input"' in html


def test_the_api_keeps_the_report_policy(client):
    assert client.get("/health").headers["content-security-policy"] == REPORT_CSP


def test_static_files_are_a_fixed_list(client):
    script = client.get("/static/studio/studio.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/studio/studio.css").status_code == 200
    assert_error(client.get("/static/studio/..%2Fstudio.py"), 404, "not_found")
    assert_error(client.get("/static/studio/app.py"), 404, "not_found")


def test_critique_page_shows_the_critique(client, done_job):
    response = client.get(f"/studio/jobs/{done_job}")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == STUDIO_CSP
    html = response.text
    result = client.get(f"/jobs/{done_job}").json()["result"]
    critique = result["critique"]
    assert f'<strong id="overall-score">{critique["overall_score"]:.1f}</strong>' in html
    assert f'<strong id="overall-grade">{critique["overall_grade"]}</strong>' in html
    for key in DIMENSIONS:
        assert f'data-dimension="{key}"' in html
    assert 'src="data:image/jpeg;base64,' in html
    assert f'<dd id="mode-used">{result["mode_used"]}</dd>' in html
    # The disclaimer is the setting's text, escaped like all text on the page.
    assert "not endorsed. &lt;b&gt;inert&lt;/b&gt;" in html
    download = client.get(f"/studio/jobs/{done_job}/critique.json")
    assert download.status_code == 200 and download.json() == result
    assert "attachment" in download.headers["content-disposition"]
    assert client.get(f"/jobs/{done_job}/report?kind=detailed").status_code == 200


def test_fallback_is_explained(client):
    # The tiny home has no adapter: lora falls back, and the page says why.
    response = client.post(
        "/jobs", files=upload(photo_bytes("coffee")), data={"advisor": "ansel", "mode": "lora"}
    )
    job_id = response.json()["id"]
    assert wait_for_job(client, job_id)["status"] == "done"
    html = client.get(f"/studio/jobs/{job_id}").text
    assert '<dd id="mode-requested">lora</dd>' in html
    assert "Why it fell back" in html and "no active adapter" in html


def test_a_job_not_yet_done_shows_its_progress(tiny_backend, tiny_model, tmp_path):
    from backend_fakes import GatedBackend
    from mondrian.service.app import create_app

    gated = GatedBackend(tiny_backend)
    app = create_app(tiny_settings(tmp_path / "home", tiny_model), gated)
    with TestClient(app) as client:
        try:
            response = client.post("/jobs", files=upload(photo_bytes()), data={"advisor": "ansel"})
            job_id = response.json()["id"]
            assert gated.entered.wait(30)
            html = client.get(f"/studio/jobs/{job_id}").text
        finally:
            gated.gate.set()
        assert f'data-job-id="{job_id}"' in html and 'data-status="running"' in html
        assert '<span class="job-phase">preparing</span>' in html
        assert "not endorsed" in html
        assert wait_for_job(client, job_id)["status"] == "done"


def test_unknown_job_pages_are_json_404s(client):
    assert_error(client.get("/studio/jobs/" + "0" * 32), 404, "unknown_job")
    assert_error(client.get("/studio/jobs/" + "0" * 32 + "/critique.json"), 404, "unknown_job")
