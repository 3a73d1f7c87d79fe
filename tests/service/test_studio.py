"""The studio's pages (service/routes/studio.py) through the TestClient: what the server
renders and the policy it sends; tests/browser/ drives the same pages in Chromium."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from mondrian.schema import DIMENSIONS, example_critique
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


def listed_photo(client, job_id: str) -> str | None:
    """The photo name `GET /jobs` lists for the job."""
    listed = client.get("/jobs", params={"limit": 100}).json()["jobs"]
    return next(job["photo"] for job in listed if job["id"] == job_id)


def test_a_home_upload_records_the_photo_file_name(client, done_job):
    # studio.js posts the home page's photo to POST /jobs with the file's name: the
    # critique page, the history and the exports name the photo by it, not by its hash.
    assert listed_photo(client, done_job) == "chelsea.jpg"
    assert '<p class="photo-name">chelsea.jpg</p>' in client.get(f"/studio/jobs/{done_job}").text
    assert '<span class="thumb-photo">chelsea.jpg</span>' in client.get("/studio/history").text
    md = client.get(f"/studio/jobs/{done_job}/critique.md").text
    assert md.startswith("# chelsea.jpg, by Ansel Adams\n")
    # A name with a folder (old browsers sent Windows paths) keeps only the file's name.
    response = client.post(
        "/jobs",
        files=upload(photo_bytes("coffee"), name="C:\\Users\\me\\coffee.jpg"),
        data={"advisor": "ansel"},
    )
    assert listed_photo(client, response.json()["id"]) == "coffee.jpg"


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
            compare = client.get(f"/studio/jobs/{job_id}/compare").text
        finally:
            gated.gate.set()
        assert f'data-job-id="{job_id}"' in html and 'data-status="running"' in html
        assert '<span class="job-phase">preparing</span>' in html
        # A comparison with a job still running: its column follows it (studio.js).
        assert f'data-pending="{job_id}"' in compare and 'class="job-progress"' in compare
        assert "not endorsed" in html
        assert wait_for_job(client, job_id)["status"] == "done"


def test_unknown_job_pages_are_json_404s(client):
    assert_error(client.get("/studio/jobs/" + "0" * 32), 404, "unknown_job")
    assert_error(client.get("/studio/jobs/" + "0" * 32 + "/critique.json"), 404, "unknown_job")


def test_critique_page_has_radar_facts_and_no_inline_code(client, done_job):
    html = client.get(f"/studio/jobs/{done_job}").text
    result = client.get(f"/jobs/{done_job}").json()["result"]
    radar = re.search(r'<figure id="radar"><svg class="radar-chart".*?</svg>', html, re.S)
    assert radar is not None
    assert "Scores out of 10: Composition" in radar.group(0)
    assert 'xmlns="' not in radar.group(0)  # inline SVG: no URL of any kind
    # The measured facts: every fact a row, the checks' count said.
    assert 'id="measured"' in html
    for fact in result["facts"]:
        assert f'data-fact="{fact["name"]}"' in html
    for check in result["checks"]:
        assert check["message"].replace("'", "&#39;") in html
    assert "style=" not in html and "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert 'id="exemplars"' not in html  # baseline retrieved no exemplar
    assert 'id="compare-link"' not in html  # the only critique of this photo


def test_markdown_and_pdf_downloads(client, done_job):
    result = client.get(f"/jobs/{done_job}").json()["result"]
    md = client.get(f"/studio/jobs/{done_job}/critique.md")
    assert md.status_code == 200
    assert md.headers["content-type"] == "text/markdown; charset=utf-8"
    assert f'filename="critique-{done_job}.md"' in md.headers["content-disposition"]
    # The photo's name where the job recorded one, else its hash (as `mondrian export`).
    assert re.match(r"# .+, by Ansel Adams\n", md.text)
    assert f"{result['critique']['overall_score']:.2f}/10" in md.text
    pdf = client.get(f"/studio/jobs/{done_job}/critique.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and b"%%EOF" in pdf.content[-64:]
    assert f'filename="critique-{done_job}.pdf"' in pdf.headers["content-disposition"]
    # The same job exports the same bytes (reports/pdf.py fixes the creation date).
    assert client.get(f"/studio/jobs/{done_job}/critique.pdf").content == pdf.content
    unknown = "0" * 32
    for suffix in ("md", "pdf"):
        assert_error(client.get(f"/studio/jobs/{unknown}/critique.{suffix}"), 404, "unknown_job")


def test_rag_exemplars_are_served_by_their_place_only(client, tmp_path):
    from mondrian.context import Context
    from mondrian.portfolio.indexing import index_paths
    from mondrian.service.stages import passes_for
    from mondrian.storage import advisors, jobs

    state = client.app.state.mondrian
    folder = tmp_path / "portfolio"
    folder.mkdir()
    for name in ("rocket", "camera", "astronaut"):
        (folder / f"{name}.jpg").write_bytes(photo_bytes(name))
    ctx = Context(backend=state.backend, db=state.db, settings=state.settings)
    with state.db.read() as conn:
        fan_ho = advisors.require_advisor(conn, "fan_ho")
    assert len(index_paths(ctx, fan_ho, [folder]).indexed) == 3
    response = client.post(
        "/jobs", files=upload(photo_bytes("coffee")), data={"advisor": "fan_ho", "mode": "rag"}
    )
    job_id = response.json()["id"]
    job = wait_for_job(client, job_id)
    assert job["status"] == "done" and job["mode_used"] == "rag"
    # With a portfolio, rag's two passes are the profile and the critique (stages.py).
    with state.db.read() as conn:
        stored = jobs.require_job(conn, job_id)
    assert passes_for(ctx, stored) == ("profiling", "critiquing")
    references = job["result"]["references"]
    assert references
    html = client.get(f"/studio/jobs/{job_id}").text
    assert 'id="exemplars"' in html
    assert html.count('class="exemplar"') == len(references)
    assert 'class="reference"' in html  # the portfolio's means on the radar
    for index, ref in enumerate(references):
        assert f'src="/studio/jobs/{job_id}/exemplars/{index}"' in html
        image = client.get(f"/studio/jobs/{job_id}/exemplars/{index}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
        assert ref["image_hash"] not in html  # the page names no stored image
    past = len(references)
    assert_error(client.get(f"/studio/jobs/{job_id}/exemplars/{past}"), 404, "unknown_exemplar")
    assert client.get(f"/studio/jobs/{job_id}/exemplars/-1").status_code == 404
    assert client.get(f"/studio/jobs/{job_id}/exemplars/..%2F..%2Fdb").status_code in (404, 422)


def test_comparison_sets_the_advisors_of_one_photo_side_by_side(client):
    ids = []
    for advisor in ("ansel", "fan_ho"):
        response = client.post(
            "/jobs",
            files=upload(photo_bytes("astronaut"), name="astro.jpg"),
            data={"advisor": advisor},
        )
        ids.append(response.json()["id"])
    for job_id in ids:
        assert wait_for_job(client, job_id)["status"] == "done"
    html = client.get(f"/studio/jobs/{ids[0]}").text
    assert f'href="/studio/jobs/{ids[0]}/compare"' in html
    compare = client.get(f"/studio/jobs/{ids[1]}/compare")
    assert compare.status_code == 200
    assert compare.headers["content-security-policy"] == STUDIO_CSP
    page = compare.text
    assert "2 critiques side by side" in page
    columns = re.findall(r'class="compare-column" data-job-id="([0-9a-f]{32})"', page)
    assert columns == ids  # oldest first, one per advisor
    assert page.count('class="radar-chart"') == 2
    scores = [client.get(f"/jobs/{i}").json()["result"]["critique"]["dimensions"] for i in ids]
    for key in DIMENSIONS:
        row = re.search(rf'<tr data-dimension="{key}">(.*?)</tr>', page, re.S).group(1)
        cells = re.findall(r'<td class="num( best)?">(\d+)', row)
        assert [int(v) for _, v in cells] == [s[key]["score"] for s in scores]
        values = [s[key]["score"] for s in scores]
        marked = [bool(top) for top, _ in cells]
        assert marked == [v == max(values) and len(set(values)) > 1 for v in values]
    assert "style=" not in page
    assert_error(client.get("/studio/jobs/" + "0" * 32 + "/compare"), 404, "unknown_job")


def test_model_text_is_inert_on_the_critique_and_comparison(tiny_backend, tiny_model, tmp_path):
    from backend_fakes import ScriptedBackend
    from mondrian.service.app import create_app

    evil = '<img src=x onerror="alert(1)">'

    def script():
        critique = example_critique()
        return critique.model_copy(update={"strengths": [evil], "image_description": evil})

    app = create_app(
        tiny_settings(tmp_path / "home", tiny_model), ScriptedBackend(tiny_backend, script)
    )
    with TestClient(app) as client:
        ids = []
        for advisor in ("ansel", "fan_ho"):
            response = client.post("/jobs", files=upload(photo_bytes()), data={"advisor": advisor})
            ids.append(response.json()["id"])
        for job_id in ids:
            assert wait_for_job(client, job_id)["status"] == "done"
        for url in (f"/studio/jobs/{ids[0]}", f"/studio/jobs/{ids[0]}/compare"):
            html = client.get(url).text
            assert evil not in html and "onerror=&#34;alert(1)&#34;" in html, url
        page = client.get(f"/studio/jobs/{ids[0]}").text
        assert '<p class="description" id="description">&lt;img' in page
        markdown = client.get(f"/studio/jobs/{ids[0]}/critique.md").text
        assert evil not in markdown  # reports/markdown.py writes HTML's < and > as entities
