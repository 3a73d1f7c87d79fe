"""Every endpoint of the real app, over HTTP, with the tiny model (default policy)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from mondrian.facts.checks import run_checks
from mondrian.schema import DIMENSIONS, AnalysisResult, example_critique
from mondrian.service.app import create_app
from mondrian.service.options import ServiceOptions
from mondrian.storage import images, jobs, reviews

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def app(tiny_backend, tiny_model, tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("api-home"), tiny_model)
    # Frequent progress writes and a quick idle poll: the tests below watch both.
    options = ServiceOptions(progress_interval_s=0.02, idle_poll_s=0.05)
    return create_app(settings, tiny_backend, options=options)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def analyzed(client):
    """One synchronous analysis in the lora mode, which this advisor cannot serve."""
    response = client.post(
        "/analyze", files=upload(photo_bytes()), data={"advisor": "ansel", "mode": "lora"}
    )
    assert response.status_code == 200, response.text
    return response


def test_health_reports_model_policy_and_queue(client, tiny_model):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["model"] == str(tiny_model)
    assert body["backend"] == "transformers"
    assert body["device"] == "cpu"
    assert body["adapters"] == []
    assert body["default_mode"] == "baseline"
    assert body["policy"] == {"name": "fine_tuned"}
    assert body["queue"]["capacity"] == 16
    assert body["queue"]["depth"] == 0
    assert body["queue"]["worker_alive"] is True


def test_advisors_list_and_detail(client):
    listed = client.get("/advisors").json()
    ids = [a["id"] for a in listed]
    assert {"ansel", "cartier_bresson", "fan_ho"} <= set(ids)
    ansel = next(a for a in listed if a["id"] == "ansel")
    assert ansel["name"] == "Ansel Adams"
    assert ansel["active_adapter"] is None

    detail = client.get("/advisors/ansel").json()
    assert detail["id"] == "ansel"
    assert set(detail["advisor"]["weights"]) == set(DIMENSIONS)
    assert detail["advisor"]["voice_prompt"]


def test_analyze_answers_with_result_and_headers(client, analyzed):
    result = AnalysisResult.model_validate(analyzed.json())
    headers = analyzed.headers
    assert headers["X-Job-ID"] == result.job_id
    assert headers["X-Advisor-ID"] == "ansel"
    assert headers["X-Requested-Mode"] == "lora"
    # No adapter and no indexed portfolio: the fallback ends at baseline, and says so.
    assert headers["X-Analysis-Mode"] == "baseline" == result.mode_used
    assert result.mode_requested == "lora"
    assert headers["X-Model-Variant"] == "fine_tuned"
    assert result.model.adapter is None
    assert result.critique.overall_score is not None and result.critique.overall_grade
    assert result.timings["total_s"] > 0
    # The photo's facts, measured once, and the checks the final critique breaks.
    assert [f.name for f in result.facts][:3] == ["luminance_p05", "luminance_p50", "luminance_p95"]
    assert result.checks == run_checks(result.critique, result.facts)
    assert result.timings["facts_s"] >= 0

    job = wait_for_job(client, result.job_id)
    assert job["status"] == "done" and job["progress"] == 1.0
    assert job["variant"] == "fine_tuned" and job["adapter"] is None
    assert job["result"] == analyzed.json()


def test_jobs_queue_report_progress_and_finish(client, app, monkeypatch):
    written: list[float] = []
    original = jobs.set_progress

    def recording(conn, job_id, progress):
        written.append(progress)
        return original(conn, job_id, progress)

    monkeypatch.setattr(jobs, "set_progress", recording)
    response = client.post("/jobs", files=upload(photo_bytes("coffee")), data={"advisor": "fan_ho"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["id"]
    assert response.headers["Location"] == f"/jobs/{job_id}"
    assert response.headers["X-Job-ID"] == job_id
    assert accepted["status"] == "queued"
    assert accepted["mode_requested"] == "baseline"  # the service's default mode

    job = wait_for_job(client, job_id)
    assert job["status"] == "done" and job["phase"] == "done", job
    assert job["progress"] == 1.0 and job["attempts"] == 1
    assert job["mode_used"] == "baseline" and job["advisor_id"] == "fan_ho"
    assert job["result"]["job_id"] == job_id
    assert job["started_at"] <= job["finished_at"]
    # Progress was written while the job ran, rising, and never claimed completion early.
    assert written, "no progress was written"
    assert written == sorted(written) and all(0 < p < 1 for p in written)


def test_report_summary_and_detailed(client, analyzed):
    job_id = analyzed.json()["job_id"]
    summary = client.get(f"/jobs/{job_id}/report")
    assert summary.status_code == 200
    assert summary.headers["content-type"].startswith("text/html")
    assert "Ansel Adams" in summary.text and job_id in summary.text
    # A report is HTML made from model and user text: nothing in it may run or frame it.
    assert summary.headers["X-Content-Type-Options"] == "nosniff"
    assert summary.headers["X-Frame-Options"] == "DENY"
    assert "script-src" not in summary.headers["Content-Security-Policy"]
    assert "default-src 'none'" in summary.headers["Content-Security-Policy"]
    # The photo is on the page, inline (the CSP's img-src admits data: and nothing remote).
    assert '<img src="data:image/jpeg;base64,' in summary.text
    assert "img-src 'self' data:" in summary.headers["Content-Security-Policy"]

    detailed = client.get(f"/jobs/{job_id}/report", params={"kind": "detailed"})
    assert detailed.status_code == 200 and detailed.text != summary.text
    assert '<img src="data:image/jpeg;base64,' in detailed.text
    comment = analyzed.json()["critique"]["dimensions"]["lighting"]["recommendation"]
    assert comment.replace("&", "&amp;").replace("<", "&lt;") in detailed.text

    assert_error(
        client.get(f"/jobs/{job_id}/report", params={"kind": "poster"}),
        422,
        "invalid_field",
        "kind",
    )


def test_report_of_a_failed_job_is_409(client, app, analyzed):
    db = app.state.mondrian.db
    with db.read() as conn:
        image_hash = jobs.require_job(conn, analyzed.json()["job_id"]).image_hash
    # A job for an advisor that does not exist (as if deleted after queueing) fails.
    ghost = db.write(jobs.create_job, "ghost", image_hash, "baseline", "tiny")
    job = wait_for_job(client, ghost.id)
    assert job["status"] == "failed" and "ghost" in job["error"]
    assert_error(client.get(f"/jobs/{ghost.id}/report"), 409, "not_done", "failed")


def test_review_is_validated_and_stored(client, app, analyzed):
    job_id = analyzed.json()["job_id"]
    corrected = example_critique(score=3).model_dump(mode="json")
    corrected["overall_score"] = 9.9  # a client's overall score is never trusted
    response = client.post(
        f"/jobs/{job_id}/review",
        json={"critique": corrected, "reviewer": "ed", "note": "Too generous on light."},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["job_id"] == job_id and body["advisor_id"] == "ansel"
    assert body["critique"]["overall_score"] == 3.0
    # Anyone may post one; it is not training data until trusted (tests/service/
    # test_service_guards.py has the operator's side).
    assert (body["status"], body["author"]) == ("pending", "client:testclient")
    with app.state.mondrian.db.read() as conn:
        stored = reviews.list_reviews(conn, job_id=job_id)
        job = jobs.require_job(conn, job_id)
        assert images.get_image(conn, stored[0].image_hash) is not None
    assert [r.id for r in stored] == [body["id"]]
    assert stored[0].image_hash == job.image_hash and stored[0].reviewer == "ed"

    bad = example_critique().model_dump(mode="json")
    bad["dimensions"]["lighting"]["score"] = 11
    assert_error(
        client.post(f"/jobs/{job_id}/review", json={"critique": bad}),
        422,
        "invalid_field",
        "critique.dimensions.lighting.score",
    )
    del bad["dimensions"]["composition"]
    bad["dimensions"]["lighting"]["score"] = 5
    assert_error(
        client.post(f"/jobs/{job_id}/review", json={"critique": bad}),
        422,
        "missing_field",
        "critique.dimensions.composition",
    )
    assert_error(
        client.post(f"/jobs/{job_id}/review", json={"critique": corrected, "stars": 5}),
        422,
        "invalid_field",
        "stars",
    )
    assert_error(client.post(f"/jobs/{job_id}/review", json={}), 422, "missing_field", "critique")
    with app.state.mondrian.db.read() as conn:
        assert len(reviews.list_reviews(conn, job_id=job_id)) == 1


def test_ab_report_counts_the_jobs(client, app, analyzed):
    report = client.get("/ab/report").json()
    with app.state.mondrian.db.read() as conn:
        recorded = jobs.list_jobs(conn, limit=1000)
    assert report["total_jobs"] == len(recorded)
    by_variant = {s["variant"]: s for s in report["variants"]}
    assert list(by_variant) == ["base", "fine_tuned"]
    for variant, stats in by_variant.items():
        mine = [j for j in recorded if j.variant == variant]
        done = sum(j.status == "done" for j in mine)
        failed = sum(j.status == "failed" for j in mine)
        assert (stats["jobs"], stats["done"], stats["failed"]) == (len(mine), done, failed)
        expected_rate = round(done / (done + failed), 4) if done + failed else None
        assert stats["validity_rate"] == expected_rate
    # Every job the service queued is fine_tuned (the default policy); only the one made
    # directly in storage above (which failed) is base.
    tuned = by_variant["fine_tuned"]
    assert tuned["done"] >= 2 and tuned["validity_rate"] == 1.0
    assert 0 < tuned["latency_p50_s"] <= tuned["latency_p95_s"]
    assert 0 <= tuned["mean_overall_score"] <= 10
    assert tuned["modes_used"] == {"baseline": tuned["done"]}
    # Every critique the service made carries facts, so every one was checked.
    assert tuned["checked"] == tuned["done"] and 0 <= tuned["checked_rate"] <= 1
    assert by_variant["base"]["mean_overall_score"] is None
    assert report["delta"]["mean_overall_score"] is None  # nothing on the base side


def test_metrics_parse_with_prometheus_parser(client, analyzed):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    def sample(family, suffix, **labels):
        return [
            s.value
            for s in families[family].samples
            if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    assert sum(sample("mondrian_http_requests", "_total", route="/analyze", status="200")) >= 1
    assert (
        sample("mondrian_analysis_seconds", "_count", mode="baseline", variant="fine_tuned")[0] >= 2
    )
    assert sample("mondrian_analyze_request_seconds", "_count", mode="baseline")[0] >= 1
    assert sample("mondrian_tokens_generated", "_total", mode="baseline")[0] > 100
    assert sample("mondrian_queue_depth", "") == [0.0]
    assert sample("mondrian_jobs_finished", "_total", status="done")[0] >= 2
    # Route templates, never raw paths: job ids must not become label values.
    routes = {s.labels.get("route") for s in families["mondrian_http_requests"].samples}
    assert not any(r and len(r) > 30 and "{" not in r for r in routes), routes


def test_openapi_and_docs_are_served(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/health",
        "/advisors",
        "/advisors/{advisor_id}",
        "/analyze",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/report",
        "/jobs/{job_id}/review",
        "/ab/report",
        "/metrics",
    ):
        assert path in paths, path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_unknown_route_and_method_are_json_errors(client):
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.delete("/health"), 405, "method_not_allowed")


def test_a_bug_is_a_500_json_error_without_traceback(app):
    def explode():
        raise RuntimeError("secret internals")

    app.add_api_route("/test-explode", explode, include_in_schema=False)
    try:
        # No `with`: the module's client already runs the lifespan; this one only talks.
        raw = TestClient(app, raise_server_exceptions=False)
        response = raw.get("/test-explode")
        assert_error(response, 500, "internal_error")
        assert "secret internals" not in response.text
    finally:
        app.router.routes[:] = [
            r for r in app.router.routes if getattr(r, "path", "") != "/test-explode"
        ]
