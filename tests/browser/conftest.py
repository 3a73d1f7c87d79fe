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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_process import ServeProcess

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
def studio(browser, tiny_model, tmp_path_factory) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp("browser") / "home", tiny_model)
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
