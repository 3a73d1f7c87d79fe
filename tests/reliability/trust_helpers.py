"""Helpers of test_trust.py, test_connections.py and test_crash.py: a real `mondrian serve`
subprocess on loopback and a tiny checkpoint, raw sockets, and the error-shape check.

- `Server(home, model, *flags, **env)`: starts one on a free port; `wait_ready()`,
  `url`, `pid`, `client()`, `health()`, `fds()` (its open descriptors, from /proc),
  `log()`, `stop()` (SIGTERM), `kill()` (SIGKILL);
- `json_error(response)`: the `{"error": {"code", "message"}}` shape, a 4xx, its code.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from serve_process import ServeProcess as Server  # noqa: F401  (the suites' name for it)
from serve_process import free_port  # noqa: F401

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


def photo() -> bytes:
    return (PHOTOS / "chelsea.jpg").read_bytes()


def json_error(response: httpx.Response, low: int = 400, high: int = 499) -> str:
    """The code of a JSON error answer with a status in [low, high]."""
    assert low <= response.status_code <= high, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    assert "Traceback" not in response.text
    return error["code"]


def wait_for_jobs(client: httpx.Client, job_ids: list[str], timeout: float = 120.0) -> dict:
    """Every job's final view, by id; fails if one is not done or failed in time."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    while len(final) < len(job_ids):
        for job_id in job_ids:
            if job_id not in final:
                body = client.get(f"/jobs/{job_id}").json()
                if body["status"] in ("done", "failed"):
                    final[job_id] = body
        if time.monotonic() > deadline:
            raise AssertionError(
                f"jobs not finished after {timeout} s: {set(job_ids) - set(final)}"
            )
        time.sleep(0.1)
    return final
