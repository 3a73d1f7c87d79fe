"""The studio's library in Chromium against a real `mondrian serve` (tests/browser/
conftest.py): a whole shoot uploaded at once to a sorted shoot page, its sidecars
downloaded, the history filtered and opened, a critique deleted. Screenshots go to `shots`."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from mondrian.reports import xmp

pytestmark = [pytest.mark.browser, pytest.mark.model]

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
WAIT_MS = 300_000  # a bound for a hung job on a loaded machine, not a speed check
PHONE = {"width": 390, "height": 844}  # as conftest.PHONE
SHOOT = ("chelsea.jpg", "coffee.jpg", "rocket.jpg")


def only_advisors(page, *ids: str) -> None:
    for box in page.locator("input[name=advisor]").all():
        box.set_checked(box.get_attribute("value") in ids)


def queued(studio, photo: str, advisor: str) -> str:
    """A job queued over the API (as an app would) and waited for."""
    files = {"image": (photo, (PHOTOS / photo).read_bytes(), "image/jpeg")}
    response = httpx.post(f"{studio.url}/jobs", files=files, data={"advisor": advisor})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + WAIT_MS / 1000
    while httpx.get(f"{studio.url}/jobs/{job_id}").json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.3)
    return job_id


def sort_values(page) -> list[float]:
    cards = page.locator("#shoot-list .thumb-card[data-sort-value]").all()
    return [float(card.get_attribute("data-sort-value")) for card in cards]


def test_a_shoot_uploads_as_one_batch_to_a_sorted_page(page, studio, shots, tmp_path):
    page.goto("/")
    page.get_by_role("link", name="A whole shoot").click()
    page.wait_for_url(re.compile(r".*/studio/shoot$"))
    only_advisors(page, "ansel")
    page.locator("#shoot-input").set_input_files([PHOTOS / name for name in SHOOT])
    assert page.locator("#shoot-chosen").inner_text() == "3 photos chosen"
    page.get_by_role("button", name="Critique the shoot").click()
    rows = page.locator("#shoot-jobs .shoot-job")
    rows.first.wait_for()
    page.locator("#shoot-done").wait_for(state="visible", timeout=WAIT_MS)
    assert rows.count() == 3
    labels = [row.locator(".job-advisor").inner_text() for row in rows.all()]
    assert labels == [f"{name} · Ansel Adams" for name in SHOOT]  # progress per photo
    assert {row.get_attribute("data-status") for row in rows.all()} == {"done"}
    page.screenshot(path=shots / "studio-shoot-upload-desktop.png", full_page=True)

    page.locator("#open-shoot").click()
    page.wait_for_url(re.compile(r".*/studio/shoots/[0-9a-f]{32}$"))
    batch_id = page.url.rsplit("/", 1)[1]
    batch = httpx.get(f"{studio.url}/batches/{batch_id}").json()
    assert sorted(p["photo"] for p in batch["photos"]) == sorted(SHOOT)
    assert batch["source"] == "studio"
    best_first = sort_values(page)
    scores = sorted((p["score"] for p in batch["photos"]), reverse=True)
    assert best_first == pytest.approx(scores, abs=0.051)  # shown to one decimal
    stars = page.locator("#shoot-list .stars").first
    assert stars.get_attribute("aria-label") == f"{xmp.stars(scores[0])} of 5 stars"
    page.screenshot(path=shots / "studio-shoot-desktop.png", full_page=True)

    # Any dimension, worst first: each select submits the filter at once (library.js).
    page.select_option("#shoot-sort", "composition")
    page.wait_for_url(re.compile(r".*sort=composition.*"))
    page.select_option("#shoot-order", "asc")
    page.wait_for_url(re.compile(r".*order=asc.*"))
    worst_first = sort_values(page)
    composition = sorted(p["dimensions"]["composition"] for p in batch["photos"])
    assert worst_first == composition

    with page.expect_download() as download:
        page.locator("#download-sidecars").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as archive:
        for photo in batch["photos"]:
            expected = xmp.stars(photo["score"])
            for name in (f"{photo['photo']}.xmp", photo["photo"].replace(".jpg", ".xmp")):
                assert xmp.read_rating(archive.read(name)) == expected

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-shoot-phone.png", full_page=True)


def test_history_filters_by_advisor_and_opens_a_critique(page, studio, shots):
    fan_ho = queued(studio, "astronaut.jpg", "fan_ho")
    queued(studio, "camera.jpg", "ansel")
    page.goto("/")
    page.get_by_role("link", name="History").click()
    page.wait_for_url(re.compile(r".*/studio/history$"))
    cards = page.locator("#history-list .thumb-card")
    assert cards.count() >= 2
    first_img = cards.first.locator("img")
    first_img.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first_img.element_handle()
    )
    page.screenshot(path=shots / "studio-history-desktop.png", full_page=True)

    page.select_option("#filter-advisor", "fan_ho")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*advisor=fan_ho.*"))
    advisors = {card.locator(".thumb-advisor").inner_text() for card in cards.all()}
    assert advisors == {"Fan Ho"}
    assert page.locator(f".thumb-card[data-job-id='{fan_ho}']").count() == 1

    page.select_option("#filter-mode", "lora")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*mode=lora.*"))
    assert page.locator("#history-empty").inner_text() == "No critiques match."

    page.goto("/studio/history?advisor=fan_ho")
    page.locator(f".thumb-card[data-job-id='{fan_ho}'] .thumb-open").click()
    page.wait_for_url(re.compile(rf".*/studio/jobs/{fan_ho}$"))
    assert page.locator("h1").inner_text().startswith("Critique by Fan Ho")

    page.set_viewport_size(PHONE)
    page.goto("/studio/history")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-history-phone.png", full_page=True)


def test_delete_asks_then_removes_the_critique(page, studio):
    job_id = queued(studio, "hubble_deep_field.jpg", "ansel")
    page.goto("/studio/history")
    card = page.locator(f".thumb-card[data-job-id='{job_id}']")
    button = card.get_by_role("button", name=re.compile("Delete the critique"))

    page.once("dialog", lambda dialog: dialog.dismiss())
    button.click()
    assert httpx.get(f"{studio.url}/jobs/{job_id}").status_code == 200  # dismissed: kept

    messages: list[str] = []

    def accept(dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    button.click()
    page.wait_for_url(re.compile(r".*/studio/history\?.*"))  # DELETE /jobs/{id}, then the list
    assert "Delete this critique" in messages[0]
    assert page.locator(f".thumb-card[data-job-id='{job_id}']").count() == 0
    assert httpx.get(f"{studio.url}/jobs/{job_id}").status_code == 404
    assert httpx.get(f"{studio.url}/studio/thumbs/{job_id}.jpg").status_code == 404
