"""Trust and request guards of the real app, on a backend that is no model (fast): the
admin token, review trust and limits, Host and Origin checks, headers, validation nits."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import TEST_HOSTS, assert_error, png_bytes

from backend_fakes import EchoBackend
from mondrian.config import Settings
from mondrian.schema import example_critique
from mondrian.service.app import create_app
from mondrian.storage import images, jobs, reviews

ADMIN = "operator-secret"
ALICE = "alice-secret"


def make_client(home, **overrides) -> TestClient:
    overrides.setdefault("allowed_hosts", TEST_HOSTS)
    settings = Settings(home=home, **overrides)
    return TestClient(create_app(settings, EchoBackend()))


@pytest.fixture
def client(tmp_path):
    with make_client(
        tmp_path / "home", admin_token=ADMIN, review_tokens={"alice": ALICE}, reviews_per_hour=3
    ) as client:
        yield client


def finished_job(client) -> str:
    """A job that ran and failed: finished, so it may be reviewed."""
    db = client.app.state.mondrian.db
    settings = client.app.state.mondrian.settings
    h = db.write(images.store_image, settings.images_dir, png_bytes(8, 6), "image/png", 8, 6)
    job = db.write(jobs.create_job, "ansel", h, "baseline", "echo-model")
    db.write(jobs.start_job, job.id)
    db.write(jobs.fail_job, job.id, "test")
    return job.id


def review_body(score: int = 3) -> dict:
    return {"critique": example_critique(score).model_dump(mode="json"), "reviewer": "maria"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_reviews_are_pending_until_an_operator_accepts_them(client):
    job_id = finished_job(client)
    posted = client.post(f"/jobs/{job_id}/review", json=review_body())
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert body["status"] == "pending" and body["author"] == "client:testclient"
    db = client.app.state.mondrian.db
    with db.read() as conn:
        assert reviews.training_rows(conn, "ansel") == []
    # Listing and deciding are operator actions.
    assert_error(client.get("/admin/reviews"), 403, "admin_required")
    assert_error(client.get("/admin/reviews", headers=bearer("wrong")), 403, "admin_required")
    listed = client.get("/admin/reviews?status=pending", headers=bearer(ADMIN)).json()
    assert [r["id"] for r in listed] == [body["id"]]
    accepted = client.post(f"/admin/reviews/{body['id']}/accept", headers=bearer(ADMIN))
    assert accepted.json()["status"] == "accepted" and accepted.json()["decided_by"] == "admin"
    with db.read() as conn:
        assert [r["id"] for r in reviews.training_rows(conn, "ansel")] == [body["id"]]
    assert_error(
        client.post("/admin/reviews/999/reject", headers=bearer(ADMIN)), 404, "unknown_review"
    )


def test_a_trusted_token_is_accepted_at_once_and_an_unknown_one_refused(client):
    job_id = finished_job(client)
    trusted = client.post(f"/jobs/{job_id}/review", json=review_body(), headers=bearer(ALICE))
    assert trusted.status_code == 201, trusted.text
    assert (trusted.json()["status"], trusted.json()["author"]) == ("accepted", "token:alice")
    refused = client.post(f"/jobs/{job_id}/review", json=review_body(4), headers=bearer("nope"))
    assert_error(refused, 401, "bad_token")


def test_duplicates_are_refused_and_each_client_is_rate_limited(client):
    job_id = finished_job(client)
    assert client.post(f"/jobs/{job_id}/review", json=review_body(1)).status_code == 201
    assert_error(
        client.post(f"/jobs/{job_id}/review", json=review_body(1)), 409, "duplicate_review"
    )
    for score in (2, 3):
        assert client.post(f"/jobs/{job_id}/review", json=review_body(score)).status_code == 201
    limited = client.post(f"/jobs/{job_id}/review", json=review_body(4))
    assert_error(limited, 429, "rate_limited", "3 reviews an hour")
    assert 3000 <= int(limited.headers["Retry-After"]) <= 3600
    # Another author has a budget of their own.
    other = client.post(f"/jobs/{job_id}/review", json=review_body(4), headers=bearer(ALICE))
    assert other.status_code == 201


def test_operator_actions_are_refused_when_no_admin_token_is_configured(tmp_path):
    with make_client(tmp_path / "home") as client:
        refused = client.get("/admin/reviews", headers=bearer(""))
        assert refused.status_code in (401, 403)
        assert_error(client.get("/admin/reviews", headers=bearer("x")), 403, "admin_disabled")
        assert_error(client.post("/admin/reviews/1/accept"), 403, "admin_disabled")


def test_review_validation_nits(client):
    job_id = finished_job(client)
    with_bool = review_body()
    with_bool["critique"]["dimensions"]["lighting"]["score"] = True
    assert_error(client.post(f"/jobs/{job_id}/review", json=with_bool), 422, "invalid_field")
    assert_error(
        client.post(f"/jobs/{job_id}%0A/review", json=review_body()), 422, "invalid_job_id"
    )
    assert_error(client.get("/advisors/ansel%0A"), 422, "invalid_advisor_id")
    assert_error(client.get(f"/jobs/{job_id}%0A"), 422, "invalid_job_id")


def test_hosts_the_service_does_not_serve_are_refused(client):
    assert client.get("/health", headers={"Host": "localhost:5100"}).status_code == 200
    assert client.get("/health", headers={"Host": "[::1]:5100"}).status_code == 200
    for host in ("evil.example", "evil.example:5100", "localhost.evil.example", ""):
        assert_error(client.get("/health", headers={"Host": host}), 400, "invalid_host")


def test_cross_site_posts_are_refused(client):
    job_id = finished_job(client)
    url = f"/jobs/{job_id}/review"
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver:3000"},  # another local app is another origin
        {"Sec-Fetch-Site": "cross-site"},
    ):
        assert_error(client.post(url, json=review_body(), headers=headers), 403, "cross_site")
    same = client.post(url, json=review_body(), headers={"Origin": "http://testserver"})
    assert same.status_code == 201, same.text
    # A safe method is not state-changing: a cross-site GET is answered.
    assert client.get("/health", headers={"Origin": "http://evil.example"}).status_code == 200


def test_framing_and_charset_refusals(client):
    both = client.post(
        "/jobs",
        content=b"0\r\n\r\n",
        headers={"Transfer-Encoding": "chunked", "Content-Length": "5"},
    )
    assert_error(both, 400, "bad_request", "Transfer-Encoding and Content-Length")
    latin = client.post(
        "/jobs",
        content=b"--x--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=x; charset=latin-1"},
    )
    assert_error(latin, 415, "unsupported_media_type", "UTF-8")


def test_every_answer_has_the_security_headers(client):
    job_id = finished_job(client)
    for response in (
        client.get("/health"),
        client.get(f"/jobs/{job_id}/report"),  # a 409: the job failed
        client.get("/nowhere"),
        client.get("/health", headers={"Host": "evil.example"}),
    ):
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_metrics_label_only_known_methods_and_routes(client):
    for n in range(3000):
        client.request(f"X{n}", "/health")
    for n in range(50):
        client.get(f"/made-up/{n}")
    scrape = client.get("/metrics").text
    assert len(scrape) < 60_000
    methods, routes = set(), set()
    for family in text_string_to_metric_families(scrape):
        if family.name == "mondrian_http_requests":
            for sample in family.samples:
                methods.add(sample.labels["method"])
                routes.add(sample.labels["route"])
    assert "other" in methods and methods <= {"GET", "POST", "other"}
    assert routes <= {"/health", "/metrics", "unmatched"}


def test_an_empty_mode_is_refused_not_defaulted(client):
    files = {"image": ("a.png", png_bytes(64, 64), "image/png")}
    response = client.post("/jobs", files=files, data={"advisor": "ansel", "mode": ""})
    assert_error(response, 422, "empty_mode", "empty")
    with client.app.state.mondrian.db.read() as conn:
        assert jobs.list_jobs(conn) == []
