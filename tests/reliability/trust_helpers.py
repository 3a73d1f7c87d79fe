"""Helpers of test_trust.py, test_connections.py and test_crash.py: a real `mondrian serve`
subprocess on loopback and a tiny checkpoint, raw sockets, and the error-shape check.

- `Server(home, model, *flags, **env)`: starts one on a free port; `wait_ready()`,
  `url`, `pid`, `client()`, `health()`, `fds()` (its open descriptors, from /proc),
  `log()`, `stop()` (SIGTERM), `kill()` (SIGKILL);
- `json_error(response)`: the `{"error": {"code", "message"}}` shape, a 4xx, its code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT_S = 180.0
PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo() -> bytes:
    return (PHOTOS / "chelsea.jpg").read_bytes()


class Server:
    def __init__(self, home: Path, model: Path, *flags: str, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "mondrian", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model", str(model), "--backend", "transformers"]
        command += ["--device", "cpu", "--log-level", "warning", *flags]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "MONDRIAN_HOME": str(home),
            # The shortest answers keep a tiny model's job near half a second.
            "MONDRIAN_MAX_TEXT_CHARS": "8",
            "MONDRIAN_MAX_LIST_ITEMS": "1",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        self.command = command
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mondrian serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"mondrian serve not ready after {timeout:.0f} s:\n{self.log()}")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)

    def health(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/health", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_kinds(self) -> Counter[str]:
        """Its open descriptors by kind ('socket', 'mondrian.db-wal', ...): for messages."""
        kinds: Counter[str] = Counter()
        folder = f"/proc/{self.pid}/fd"
        for name in os.listdir(folder):
            try:
                target = os.readlink(f"{folder}/{name}")
            except OSError:
                continue
            kinds[target.split(":")[0] if ":" in target else Path(target).name] += 1
        return kinds

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


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
