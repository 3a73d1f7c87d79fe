"""A real `mondrian serve` in a subprocess, on loopback and a tiny checkpoint: the one
helper the reliability suite (tests/reliability) and the browser tests (tests/browser)
start servers with.

`ServeProcess(home, model, *flags, **env)` starts one on a port the kernel picked (`flags`
go to `mondrian serve`, `env` values become environment variables, e.g.
`MONDRIAN_QUEUE_SIZE="4"`); `wait_ready()` waits for `/health` and returns it; then `url`,
`port`, `pid`, `home`, `client()` (httpx), `health()`, `log()`, `db()` (read-only SQLite),
`fds()` and `fd_kinds()` (its open descriptors, from /proc), `stop()` (SIGTERM, then
SIGKILL), `kill()`.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """One `mondrian serve` subprocess."""

    def __init__(self, home: Path, model: Path, *flags: str, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "mondrian", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model", str(model), "--backend", "transformers"]
        command += ["--device", "cpu", "--log-level", "warning", *flags]
        self.command = command
        self.env = {
            **os.environ,
            # This checkout's code, whichever way the tests found it (a worktree, PYTHONPATH).
            "PYTHONPATH": os.pathsep.join(sys.path),
            "MONDRIAN_HOME": str(home),
            # The shortest answers keep a tiny model's job near half a second.
            "MONDRIAN_MAX_TEXT_CHARS": "8",
            "MONDRIAN_MAX_LIST_ITEMS": "1",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> ServeProcess:
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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def db(self) -> sqlite3.Connection:
        """Read-only: the server stays the one writer."""
        uri = f"file:{self.home / 'mondrian.db'}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

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
