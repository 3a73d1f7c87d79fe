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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from serve_process import ServeProcess

Server = ServeProcess  # the name the suite's tests use


@pytest.fixture(scope="module")
def serve_mondrian(tiny_model, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """`serve_mondrian(*flags, home=None, **env) -> Server`, ready; `env` values are set as
    environment variables (`MONDRIAN_QUEUE_SIZE="4"`), `flags` go to `mondrian serve`."""
    servers: list[Server] = []

    def start(*flags: str, home: Path | None = None, **env: str) -> Server:
        home = home or tmp_path_factory.mktemp("reliability") / "home"
        server = ServeProcess(home, tiny_model, *flags, **env)
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
