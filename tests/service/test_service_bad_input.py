"""Bad input never gives a 500: each is a 4xx JSON error naming the problem, nothing is
queued for it, and the service keeps serving.

The client re-raises any exception that escapes the app, so an unhandled error in a
handler fails these tests even before the status check would."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import (
    assert_error,
    photo_bytes,
    png_bytes,
    png_header_claiming,
    tiny_settings,
    upload,
    wait_for_job,
)

from mondrian.schema import example_critique
from mondrian.service.app import FORM_OVERHEAD_BYTES, create_app
from mondrian.service.options import ServiceOptions
from mondrian.storage import jobs

pytestmark = pytest.mark.model

MAX_BYTES = 8_000  # chelsea.jpg is 4,872 bytes; astronaut.jpg 9,005
MAX_PIXELS = 20_000  # chelsea.jpg is 160 x 106 = 16,960 pixels


@pytest.fixture(scope="module")
def app(tiny_backend, tiny_model, tmp_path_factory):
    settings = tiny_settings(
        tmp_path_factory.mktemp("bad-input-home"),
        tiny_model,
        max_upload_bytes=MAX_BYTES,
        max_image_pixels=MAX_PIXELS,
    )
    return create_app(settings, tiny_backend, options=ServiceOptions(idle_poll_s=0.05))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


GOOD = photo_bytes("chelsea")


def saved_as(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 60, 30)).save(buf, format=fmt)
    return buf.getvalue()


TRUNCATED = GOOD[: len(GOOD) // 2]

# (case, form fields, files, status, code, words the message must contain)
CASES = [
    ("unknown advisor", {"advisor": "nobody"}, upload(GOOD), 404, "unknown_advisor", ["nobody"]),
    ("path advisor", {"advisor": "../etc"}, upload(GOOD), 422, "invalid_advisor_id", ["../etc"]),
    (
        "path advisor, nested",
        {"advisor": "ansel/../../etc/passwd"},
        upload(GOOD),
        422,
        "invalid_advisor_id",
        ["ansel/../../etc/passwd"],
    ),
    (
        "windows path advisor",
        {"advisor": "..\\..\\boot.ini"},
        upload(GOOD),
        422,
        "invalid_advisor_id",
        ["advisor id"],
    ),
    ("empty advisor", {"advisor": ""}, upload(GOOD), 422, "missing_field", ["advisor"]),
    ("upper-case advisor", {"advisor": "ANSEL"}, upload(GOOD), 422, "invalid_advisor_id", []),
    ("long advisor", {"advisor": "a" * 65}, upload(GOOD), 422, "invalid_advisor_id", []),
    (
        "unknown mode",
        {"advisor": "ansel", "mode": "turbo"},
        upload(GOOD),
        422,
        "unknown_mode",
        ["turbo", "baseline"],
    ),
    ("missing image", {"advisor": "ansel"}, None, 422, "missing_field", ["image"]),
    ("missing advisor", {}, upload(GOOD), 422, "missing_field", ["advisor"]),
    (
        "image as text",
        {"advisor": "ansel", "image": "a photo"},
        None,
        422,
        "invalid_field",
        ["image"],
    ),
    ("empty file", {"advisor": "ansel"}, upload(b""), 422, "empty_file", ["empty"]),
    (
        "not an image",
        {"advisor": "ansel"},
        upload(b"%PDF-1.7 definitely not a photo", "photo.jpg"),
        422,
        "not_an_image",
        ["not an image"],
    ),
    (
        "truncated jpeg",
        {"advisor": "ansel"},
        upload(TRUNCATED),
        422,
        "truncated_image",
        ["truncated"],
    ),
    (
        "over the size limit",
        {"advisor": "ansel"},
        upload(photo_bytes("astronaut")),
        413,
        "file_too_large",
        [str(MAX_BYTES)],
    ),
    (
        "far over the size limit",
        {"advisor": "ansel"},
        upload(b"\xff" * (MAX_BYTES + FORM_OVERHEAD_BYTES + 1)),
        413,
        "file_too_large",
        ["limit"],
    ),
    (
        "over the pixel limit",
        {"advisor": "ansel"},
        upload(png_bytes(200, 120), "big.png", "image/png"),
        413,
        "too_many_pixels",
        ["200x120", str(MAX_PIXELS)],
    ),
    (
        "icon",
        {"advisor": "ansel"},
        upload(saved_as("ICO"), "photo.ico", "image/x-icon"),
        422,
        "unsupported_format",
        ["ICO", "JPEG"],
    ),
    (
        "postscript",
        {"advisor": "ansel"},
        upload(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\n", "a.jpg"),
        422,
        "unsupported_format",
        ["EPS"],
    ),
    (
        "sliver",
        {"advisor": "ansel"},
        upload(png_header_claiming(3, 6000), "strip.png", "image/png"),
        422,
        "image_too_small",
        ["3x6000", "32"],
    ),
    (
        "decompression bomb header",
        {"advisor": "ansel"},
        upload(png_header_claiming(100_000, 100_000), "bomb.png", "image/png"),
        413,
        "too_many_pixels",
        ["pixels", str(MAX_PIXELS)],
    ),
]


@pytest.mark.parametrize("endpoint", ["/analyze", "/jobs"])
@pytest.mark.parametrize(
    ("fields", "files", "status", "code", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_upload_is_a_clear_4xx(client, endpoint, fields, files, status, code, words):
    response = client.post(endpoint, data=fields, files=files)
    assert_error(response, status, code, *words)


def test_chunked_upload_over_the_cap_is_cut_off(client):
    # No Content-Length: the body is counted as it arrives and refused at the cap.
    boundary = "mondrian-test-boundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="advisor"\r\n\r\nansel\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(40):
            yield b"\xff" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/analyze",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_error(response, 413, "file_too_large", "limit")


def test_not_a_multipart_body(client):
    response = client.post("/analyze", json={"advisor": "ansel"})
    assert_error(response, 422, "missing_field", "image")
    broken = client.post(
        "/analyze",
        content=b"--x\r\nContent-Disposition: form-data; name=advisor\r\n\r\nansel",
        headers={"Content-Type": "multipart/form-data"},  # no boundary
    )
    assert_error(broken, 400, "bad_request", "boundary")


@pytest.mark.parametrize(
    ("path", "status", "code", "word"),
    [
        ("/advisors/nobody", 404, "unknown_advisor", "nobody"),
        ("/advisors/ANSEL", 422, "invalid_advisor_id", "ANSEL"),
        ("/advisors/..%5Cetc", 422, "invalid_advisor_id", "etc"),
        ("/advisors/%2E%2E", 422, "invalid_advisor_id", ".."),
        ("/jobs/not-a-job", 404, "unknown_job", "not-a-job"),
        ("/jobs/" + "0" * 32, 404, "unknown_job", "0" * 32),
        ("/jobs/" + "0" * 32 + "/report", 404, "unknown_job", "0" * 32),
        ("/ab/report?limit=0", 422, "invalid_field", "limit"),
    ],
)
def test_bad_lookup_is_a_clear_4xx(client, path, status, code, word):
    assert_error(client.get(path), status, code, word)


def test_bad_review_requests(client):
    unknown = "f" * 32
    valid = {"critique": example_critique().model_dump(mode="json")}
    assert_error(client.post(f"/jobs/{unknown}/review", json=valid), 404, "unknown_job", unknown)
    assert_error(
        client.post(f"/jobs/{unknown}/review", json={"critique": {}}),
        422,
        "missing_field",
        "critique.image_description",
    )
    assert_error(
        client.post(
            f"/jobs/{unknown}/review",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        422,
        "invalid_field",
        "JSON",
    )


def test_after_all_that_the_table_is_clean_and_the_service_serves(client, app):
    db = app.state.mondrian.db
    with db.read() as conn:
        # No bad request queued anything (or left anything half-made).
        assert jobs.count_by_status(conn) == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    response = client.post("/analyze", files=upload(GOOD), data={"advisor": "ansel"})
    assert response.status_code == 200, response.text
    assert wait_for_job(client, response.headers["X-Job-ID"])["status"] == "done"
    assert client.get("/health").json()["queue"]["worker_alive"] is True
    with db.read() as conn:
        assert jobs.count_by_status(conn) == {"queued": 0, "running": 0, "done": 1, "failed": 0}
