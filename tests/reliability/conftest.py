"""Shared by the reliability tests: a real `mondrian serve` in a subprocess on loopback,
on a tiny checkpoint, and the tools to press on it.

- `serve_mondrian(**env) -> Server`: starts one (its own MONDRIAN_HOME unless given),
  waits for `/health`, stops it (SIGTERM, then SIGKILL) when the test module ends;
- `Server`: `url`, `port`, `pid`, `home`, `client()` (httpx), `health()`, `log()`,
  `db()` (a read-only SQLite connection to its database), `stop()`, `kill()`;
- `watch_memory(pid, ceiling_kib=None) -> MemoryWatch`: samples /proc/<pid>/status every
  10 ms (peak VmRSS and RssAnon); past the ceiling it kills the process, so that a
  regression fails the test instead of exhausting the machine;
- `raw_request(port, head, chunks)`: a request written by hand on a socket, read while it
  is written (what httpx will not send: chunked bodies cut short, odd framing);
- `assert_json_error(response_or_status, body, low=400, high=499)`: the service's error
  shape, `{"error": {"code", "message"}}`, with a status in range.

Everything listens on 127.0.0.1 and on a port the kernel picked.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT_S = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `mondrian serve` subprocess."""

    def __init__(self, home: Path, model: Path, args: list[str], env: dict[str, str]) -> None:
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "mondrian", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model", str(model), "--backend", "transformers"]
        command += ["--device", "cpu", "--log-level", "warning", *args]
        full_env = {
            **os.environ,
            "MONDRIAN_HOME": str(home),
            # The shortest answers keep a tiny model's job near half a second.
            "MONDRIAN_MAX_TEXT_CHARS": "8",
            "MONDRIAN_MAX_LIST_ITEMS": "1",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=full_env
            )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mondrian serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def db(self) -> sqlite3.Connection:
        """Read-only: the server stays the one writer."""
        uri = f"file:{self.home / 'mondrian.db'}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

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


@pytest.fixture(scope="module")
def serve_mondrian(tiny_model, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """`serve_mondrian(*flags, home=None, **env) -> Server`, ready; `env` values are set as
    environment variables (`MONDRIAN_QUEUE_SIZE="4"`), `flags` go to `mondrian serve`."""
    servers: list[Server] = []

    def start(*flags: str, home: Path | None = None, **env: str) -> Server:
        home = home or tmp_path_factory.mktemp("reliability") / "home"
        server = Server(home, tiny_model, list(flags), env)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


class MemoryWatch(threading.Thread):
    """Samples a process's /proc status every 10 ms: peak VmRSS and RssAnon (KiB)."""

    def __init__(self, pid: int, ceiling_kib: int | None = None) -> None:
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.pid = pid
        self.ceiling_kib = ceiling_kib
        self.peak_rss_kib = 0
        self.peak_anon_kib = 0
        self.killed = False
        self._halt = threading.Event()

    def sample(self) -> tuple[int, int] | None:
        try:
            fields = dict(line.split(":", 1) for line in self.path.read_text().splitlines())
        except (OSError, ValueError):
            return None  # gone
        if "RssAnon" not in fields:
            return None  # a zombie
        return int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])

    def run(self) -> None:
        while not self._halt.is_set():
            sampled = self.sample()
            if sampled is None:
                return
            rss, anon = sampled
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_anon_kib = max(self.peak_anon_kib, anon)
            if self.ceiling_kib is not None and rss > self.ceiling_kib:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    def stop(self) -> MemoryWatch:
        self._halt.set()
        self.join()
        return self


@pytest.fixture
def watch_memory() -> Iterator[Callable[..., MemoryWatch]]:
    watches: list[MemoryWatch] = []

    def watch(pid: int, ceiling_kib: int | None = None) -> MemoryWatch:
        memory = MemoryWatch(pid, ceiling_kib)
        memory.start()
        watches.append(memory)
        return memory

    yield watch
    for memory in watches:
        memory.stop()


def _raw_request(
    port: int, head: bytes, chunks: Iterable[bytes] = (), timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `head` (request line and headers, ending in a blank line) and then `chunks`
    (bytes as they go on the wire), reading the answer meanwhile: a server may answer, and
    close, before the body is all sent. Returns (status, headers, body)."""
    received = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        pending = iter(chunks)
        sending = True
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0 if sending else 0.5)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
                if _complete(received):
                    break
                continue
            if sending:
                try:
                    sock.sendall(next(pending))
                except StopIteration:
                    sending = False
                except OSError:  # the server closed its side: read what it said
                    sending = False
    return _parse(received)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/"), f"no HTTP answer: {data[:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def raw_request() -> Callable[..., tuple[int, dict[str, str], bytes]]:
    return _raw_request


def _assert_json_error(status: int, body: bytes, low: int = 400, high: int = 499) -> str:
    """The error code of a JSON error answer whose status is within [low, high]."""
    assert low <= status <= high, (status, body[:300])
    data = json.loads(body)
    assert set(data) == {"error"}, data
    error = data["error"]
    assert isinstance(error.get("code"), str) and error["code"], data
    assert isinstance(error.get("message"), str) and error["message"], data
    assert b"Traceback" not in body
    return error["code"]


@pytest.fixture
def assert_json_error() -> Callable[..., str]:
    return _assert_json_error
