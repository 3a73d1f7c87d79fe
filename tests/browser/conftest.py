"""The browser suite's fixtures: a real `mondrian serve` on a tiny checkpoint, and Debian's
Chromium driven by Playwright's Python package (its own browser download is never used:
`executable_path` points at the system's Chromium).

- `studio`: the running server (`url`, `log()`), one per module;
- `browser`: a headless Chromium, one per module; `page`: a desktop-sized page per test,
  failing the test on any script error or Content-Security-Policy violation it logs;
- `shots`: where screenshots go, `$MONDRIAN_SCREENSHOTS` or tests/browser/screenshots.

Without Playwright or a Chromium the tests skip with the reason, except under CI=true,
where a missing browser is a failure (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT_S = 180.0
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
HERE = Path(__file__).resolve().parent


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    given = os.environ.get("MONDRIAN_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class StudioServer:
    """One `mondrian serve` subprocess on loopback, on a port the kernel picked."""

    def __init__(self, home: Path, model: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "mondrian", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model", str(model), "--backend", "transformers"]
        command += ["--device", "cpu", "--log-level", "warning"]
        env = {
            **os.environ,
            "MONDRIAN_HOME": str(home),
            # The shortest answers keep a tiny model's job near half a second.
            "MONDRIAN_MAX_TEXT_CHARS": "8",
            "MONDRIAN_MAX_LIST_ITEMS": "1",
            "OMP_NUM_THREADS": "1",
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mondrian serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"mondrian serve not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright's Python package is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None or not Path(executable).exists():
        _missing("no Chromium found (apt-get install chromium, or set MONDRIAN_CHROMIUM)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox will not start.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def studio(browser, tiny_model, tmp_path_factory) -> Iterator[StudioServer]:
    server = StudioServer(tmp_path_factory.mktemp("browser") / "home", tiny_model)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser, studio) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, base_url=studio.url)
    new_page = context.new_page()
    problems: list[str] = []
    new_page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def on_console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")

    new_page.on("console", on_console)
    yield new_page
    context.close()
    assert not problems, problems


@pytest.fixture(scope="session")
def shots() -> Path:
    folder = Path(os.environ.get("MONDRIAN_SCREENSHOTS") or HERE / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
