"""Shared by the service tests: photos, polling, and the error-shape check."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

from PIL import Image

from mondrian.config import LOOPBACK_HOSTS, Settings

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
FINAL = ("done", "failed")


# Starlette's TestClient sends `Host: testserver`; a real client names a loopback host.
TEST_HOSTS = [*LOOPBACK_HOSTS, "testserver"]


def tiny_settings(home: Path, model: Path, **overrides) -> Settings:
    overrides.setdefault("allowed_hosts", TEST_HOSTS)
    return Settings(home=home, model=str(model), backend="transformers", device="cpu", **overrides)


def tiny_backend_for(settings: Settings):
    from mondrian.backends.protocol import create_backend

    # The shortest strings and lists keep a constrained answer near 290 tokens, about
    # half a second on two CPU cores.
    return create_backend(settings, max_text_chars=8, max_list_items=1)


def photo_bytes(name: str = "chelsea") -> bytes:
    return (PHOTOS / f"{name}.jpg").read_bytes()


def png_bytes(width: int, height: int, color=(200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (a decompression bomb's calling card)
    with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def upload(data: bytes, name: str = "photo.jpg", mime: str = "image/jpeg") -> dict:
    return {"image": (name, data, mime)}


# How long a test waits for a job: a bound for a hung job, not a speed check. A healthy
# job returns as soon as it ends; on a busy 2-core machine a tiny model's job behind others
# can take minutes, so the bound sits under pytest's own 600 s, not at a minute.
JOB_WAIT_S = 300.0


def wait_for_job(client, job_id: str, timeout: float = JOB_WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/jobs/{job_id}").json()
        if body["status"] in FINAL:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {body['status']} after {timeout} s")
        time.sleep(0.05)


def assert_error(response, status: int, code: str, *words: str) -> dict:
    """A JSON error of the given status and code whose message names the problem."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    for word in words:
        assert word.lower() in error["message"].lower(), (word, error["message"])
    assert "Traceback" not in response.text
    return error
