"""The studio in Chromium against a real `mondrian serve` (tests/browser/conftest.py):
upload, live progress to done, the critique page, two advisors, refused uploads, phone
width. Screenshots of each page go to the `shots` folder."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.model]

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
JOB_URL = re.compile(r".*/studio/jobs/[0-9a-f]{32}$")
WAIT_MS = 300_000  # a bound for a hung job on a loaded machine, not a speed check
PHONE = {"width": 390, "height": 844}  # as conftest.PHONE


def only_advisors(page, *ids: str) -> None:
    for box in page.locator("input[name=advisor]").all():
        box.set_checked(box.get_attribute("value") in ids)


def test_upload_follows_progress_to_the_critique(page, studio, shots):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto("/")
    assert page.title() == "Mondrian studio"
    # Every advisor has a card with name, years and a bio line, behind a real label.
    advisors = httpx.get(studio.url + "/advisors").json()
    assert page.locator(".card").count() == len(advisors)
    ansel = page.get_by_label(re.compile("Ansel Adams"))
    assert ansel.is_checked()
    page.locator("#photo-input").set_input_files(PHOTOS / "chelsea.jpg")
    assert page.locator("#preview").is_visible()
    assert page.locator("#preview-name").inner_text() == "chelsea.jpg"
    page.screenshot(path=shots / "studio-home-desktop.png", full_page=True)

    page.get_by_role("button", name="Critique my photo").click()
    page.wait_for_url(JOB_URL, timeout=WAIT_MS)
    job_id = page.url.rsplit("/", 1)[1]
    assert f"{studio.url}/jobs/{job_id}/events" in requests  # followed by the stream

    job = httpx.get(f"{studio.url}/jobs/{job_id}").json()
    critique = job["result"]["critique"]
    assert page.locator("h1").inner_text().startswith("Critique by Ansel Adams")
    assert page.locator("#overall-score").inner_text() == f"{critique['overall_score']:.1f}"
    assert page.locator("#overall-grade").inner_text() == critique["overall_grade"]
    assert page.locator(".dim").count() == 8
    first = page.locator(".dim").first
    expected = critique["dimensions"][first.get_attribute("data-dimension")]
    assert first.locator(".comment").inner_text() == expected["comment"]
    assert expected["recommendation"] in first.locator(".recommendation").inner_text()
    assert page.locator("#mode-used").inner_text() == job["mode_used"]
    assert page.locator("#model-base").inner_text() == job["model"]
    assert "not endorsed" in page.locator("#disclaimer").inner_text()
    assert page.locator(".photo img").evaluate("img => img.naturalWidth") > 0
    with page.expect_download() as download:
        page.locator("#download-json").click()
    assert download.value.suggested_filename == f"critique-{job_id}.json"
    page.screenshot(path=shots / "studio-critique-desktop.png", full_page=True)

    page.set_viewport_size(PHONE)
    # Nothing wider than a phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-critique-phone.png", full_page=True)


def test_two_advisors_give_two_critiques(page, studio, shots):
    page.set_viewport_size(PHONE)
    page.goto("/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    only_advisors(page, "ansel", "fan_ho")
    page.locator("#photo-input").set_input_files(PHOTOS / "coffee.jpg")
    page.get_by_role("button", name="Critique my photo").click()
    rows = page.locator("#job-list .job")
    rows.first.wait_for()
    assert rows.count() == 2
    links = page.locator("#job-list .job-link")
    links.nth(1).wait_for(timeout=WAIT_MS)
    page.screenshot(path=shots / "studio-two-advisors-phone.png", full_page=True)
    assert page.url == studio.url + "/"  # two jobs: the page stays, with a link to each
    names = [row.locator(".job-advisor").inner_text() for row in rows.all()]
    assert sorted(names) == ["Ansel Adams", "Fan Ho"]
    hrefs = [link.get_attribute("href") for link in links.all()]
    for name, href in zip(names, hrefs, strict=True):
        page.goto(href)
        assert page.locator("h1").inner_text().startswith(f"Critique by {name}")
        assert page.locator(".dim").count() == 8


def test_keyboard_alone_can_choose_an_advisor(page):
    page.goto("/")
    box = page.locator("#advisor-fan_ho")
    box.focus()
    page.keyboard.press("Space")
    assert box.is_checked()
    assert page.evaluate("document.activeElement.id") == "advisor-fan_ho"


def test_refused_uploads_say_why_in_the_page(page, studio, shots, tmp_path):
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto("/")
    # Refused by the page: the wrong type never leaves the browser.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.locator("#photo-input").set_input_files(notes)
    error = page.locator("#form-error")
    assert error.is_visible() and "not a supported image" in error.inner_text()
    page.get_by_role("button", name="Critique my photo").click()
    assert "notes.txt" in error.inner_text() and posts == []

    # Refused by the server: JPEG by name and type, not by content.
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8 not really a jpeg")
    page.locator("#photo-input").set_input_files(fake)
    assert error.is_hidden()
    page.get_by_role("button", name="Critique my photo").click()
    page.get_by_text("Not accepted").wait_for()
    server = httpx.post(
        studio.url + "/jobs",
        files={"image": ("fake.jpg", fake.read_bytes(), "image/jpeg")},
        data={"advisor": "ansel"},
    )
    assert 400 <= server.status_code < 500
    assert server.json()["error"]["message"] in error.inner_text()
    assert posts == [studio.url + "/jobs"]
    assert page.locator("#jobs").is_hidden()
    page.screenshot(path=shots / "studio-refused-desktop.png", full_page=True)


def test_a_dropped_photo_is_taken(page):
    page.goto("/")
    data = list((PHOTOS / "rocket.jpg").read_bytes())
    transfer = page.evaluate_handle(
        """bytes => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "rocket.jpg", {type: "image/jpeg"});
            transfer.items.add(file);
            return transfer;
        }""",
        data,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    assert page.locator("#preview-name").inner_text() == "rocket.jpg"
    assert page.locator("#photo-input").evaluate("input => input.files[0].name") == "rocket.jpg"
    assert page.locator("#form-error").is_hidden()


def test_without_the_stream_the_page_polls(page, studio):
    polled: list[str] = []
    page.route("**/events", lambda route: route.abort())
    page.on("request", lambda r: polled.append(r.url) if "/jobs/" in r.url else None)
    page.goto("/")
    page.locator("#photo-input").set_input_files(PHOTOS / "camera.jpg")
    page.get_by_role("button", name="Critique my photo").click()
    page.wait_for_url(JOB_URL, timeout=WAIT_MS)
    job_id = page.url.rsplit("/", 1)[1]
    assert f"{studio.url}/jobs/{job_id}" in polled  # GET /jobs/{id}, the fallback
    assert page.locator(".dim").count() == 8
