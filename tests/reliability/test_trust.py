"""Trust, against a real `mondrian serve`: the operator's token, Host and Origin checks,
security headers, who may make training data, and small validation nits. Every refusal
is a JSON 4xx; nothing answers 5xx; the service is healthy after."""

from __future__ import annotations

import json
import socket

import pytest
from trust_helpers import Server, json_error, photo

from mondrian.schema import example_critique

pytestmark = [pytest.mark.reliability, pytest.mark.model]

ADMIN = "operator-token-for-tests"
ALICE = "alice-token-for-tests"
PER_HOUR = 6


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    home = tmp_path_factory.mktemp("trust") / "home"
    server = Server(
        home,
        tiny_model,
        MONDRIAN_ADMIN_TOKEN=ADMIN,
        MONDRIAN_REVIEW_TOKENS=json.dumps({"alice": ALICE}),
        MONDRIAN_REVIEWS_PER_HOUR=str(PER_HOUR),
    ).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def done_job(client) -> str:
    response = client.post(
        "/analyze", files={"image": ("a.jpg", photo(), "image/jpeg")}, data={"advisor": "ansel"}
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Job-ID"]


@pytest.fixture(scope="module")
def answers():
    """Every status this module saw: none may be a 5xx."""
    seen: list[int] = []
    yield seen
    assert not [s for s in seen if s >= 500], seen


def _review(score: int) -> dict:
    return {"critique": example_critique(score).model_dump(mode="json")}


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_operator_actions_need_the_admin_token(client, answers):
    for response, code in (
        (client.get("/admin/reviews"), "admin_required"),
        (client.get("/admin/reviews", headers=_bearer("guess")), "admin_required"),
        (client.post("/admin/reviews/1/accept"), "admin_required"),
        (client.post("/admin/reviews/1/reject", headers=_bearer(ALICE)), "admin_required"),
    ):
        answers.append(response.status_code)
        assert response.status_code == 403 and json_error(response) == code
    ok = client.get("/admin/reviews", headers=_bearer(ADMIN))
    answers.append(ok.status_code)
    assert ok.status_code == 200 and isinstance(ok.json(), list)


def test_hosts_it_does_not_serve_are_refused(client, server, answers):
    for host in ("evil.example", f"evil.example:{server.port}", "localhost.evil.example", "x"):
        response = client.get("/health", headers={"Host": host})
        answers.append(response.status_code)
        assert response.status_code == 400 and json_error(response) == "invalid_host"
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        assert client.get("/health", headers={"Host": host}).status_code == 200


def test_cross_site_state_changes_are_refused(client, server, done_job, answers):
    files = {"image": ("a.jpg", photo(), "image/jpeg")}
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{server.port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        for response in (
            client.post("/jobs", files=files, data={"advisor": "ansel"}, headers=headers),
            client.post(f"/jobs/{done_job}/review", json=_review(1), headers=headers),
        ):
            answers.append(response.status_code)
            assert response.status_code == 403 and json_error(response) == "cross_site"


def test_every_answer_carries_the_security_headers(client, done_job, answers):
    for path in ("/health", f"/jobs/{done_job}/report", "/nowhere", "/jobs/x%0A"):
        response = client.get(path)
        answers.append(response.status_code)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
    assert "<html" in client.get(f"/jobs/{done_job}/report").text.lower()


def test_reviews_are_training_data_only_once_trusted(client, done_job, answers):
    anyone = client.post(f"/jobs/{done_job}/review", json=_review(2))
    trusted = client.post(f"/jobs/{done_job}/review", json=_review(3), headers=_bearer(ALICE))
    answers += [anyone.status_code, trusted.status_code]
    assert anyone.status_code == trusted.status_code == 201, (anyone.text, trusted.text)
    assert (anyone.json()["status"], anyone.json()["author"]) == ("pending", "client:127.0.0.1")
    assert (trusted.json()["status"], trusted.json()["author"]) == ("accepted", "token:alice")
    unknown = client.post(f"/jobs/{done_job}/review", json=_review(4), headers=_bearer("nope"))
    duplicate = client.post(f"/jobs/{done_job}/review", json=_review(2))
    answers += [unknown.status_code, duplicate.status_code]
    assert unknown.status_code == 401 and json_error(unknown) == "bad_token"
    assert duplicate.status_code == 409 and json_error(duplicate) == "duplicate_review"
    pending = client.get("/admin/reviews?status=pending", headers=_bearer(ADMIN)).json()
    assert [r["id"] for r in pending] == [anyone.json()["id"]]
    accepted = client.post(f"/admin/reviews/{anyone.json()['id']}/accept", headers=_bearer(ADMIN))
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"


def test_each_client_has_a_review_rate_limit(client, done_job, answers):
    statuses = [
        client.post(f"/jobs/{done_job}/review", json=_review(score)).status_code
        for score in range(5, 11)
    ]
    answers.extend(statuses)
    # One review of this client was stored by the test above: PER_HOUR - 1 more fit.
    assert statuses[: PER_HOUR - 1] == [201] * (PER_HOUR - 1)
    limited = client.post(f"/jobs/{done_job}/review", json=_review(0))
    answers.append(limited.status_code)
    assert limited.status_code == 429 and json_error(limited) == "rate_limited"
    assert int(limited.headers["retry-after"]) > 0


def test_validation_nits_are_4xx(client, done_job, answers):
    bool_score = _review(5)
    bool_score["critique"]["dimensions"]["lighting"]["score"] = True
    files = {"image": ("a.jpg", photo(), "image/jpeg")}
    cases = [
        (client.get(f"/jobs/{done_job}%0A"), 422, "invalid_job_id"),
        (client.get(f"/jobs/{done_job}%0A/report"), 422, "invalid_job_id"),
        (client.get("/advisors/ansel%0A"), 422, "invalid_advisor_id"),
        (client.post(f"/jobs/{done_job}/review", json=bool_score), 422, "invalid_field"),
        (client.post("/jobs", files=files, data={"advisor": "ansel", "mode": ""}), 422, None),
        (
            client.post(
                "/jobs",
                content=b"--x--\r\n",
                headers={"Content-Type": "multipart/form-data; boundary=x; charset=latin-1"},
            ),
            415,
            "unsupported_media_type",
        ),
    ]
    for response, status, code in cases:
        answers.append(response.status_code)
        assert response.status_code == status, response.text
        found = json_error(response)
        assert code is None or found == code


def test_both_framings_at_once_are_refused(server, answers):
    body = b"0\r\n\r\n"
    head = (
        b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    answers.append(status)
    assert status == 400, answer[:300]
    # The app's own refusal (h11 itself lets Transfer-Encoding win), in the JSON shape.
    assert b'"code":"bad_request"' in answer and b"Transfer-Encoding" in answer, answer[-300:]


def test_still_healthy(server):
    assert server.health()["status"] == "ok"
