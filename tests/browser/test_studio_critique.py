"""The critique page complete, the comparison page and the progress stages, in Chromium
against a real `mondrian serve` (tests/browser/conftest.py) whose Fan Ho has an indexed
portfolio, so a rag critique has exemplars: the radar, the measured facts and checks, the
exemplars' thumbnails, the Markdown and PDF downloads, the print layout; two advisors side
by side; the stages the page names while a job runs. Screenshots go to the `shots` folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serve_process import ServeProcess

pytestmark = [pytest.mark.browser, pytest.mark.model]

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
JOB_URL = re.compile(r".*/studio/jobs/[0-9a-f]{32}$")
WAIT_MS = 300_000  # a bound for a hung job on a loaded machine, not a speed check
PHONE = {"width": 390, "height": 844}  # as conftest.PHONE
# What the page may say while a job runs (static/studio/studio.js `describe`), in order.
STAGE_TEXTS = [
    re.compile(r"queued( \(position \d+\))?"),
    re.compile(r"profiling the photo"),
    re.compile(r"retrieving exemplars"),
    re.compile(r"critiquing \((\d+ tokens so far|\d+%)\)"),
    re.compile(r"done"),
]


@pytest.fixture(scope="module")
def studio(browser, tiny_model, tmp_path_factory):
    """This module's server: Fan Ho's portfolio indexed first (`mondrian index`), and
    answers long enough (60 characters a text) that a page sees a job's stages go by."""
    root = tmp_path_factory.mktemp("critique")
    home = root / "home"
    portfolio = root / "portfolio"
    portfolio.mkdir()
    for name in ("rocket", "camera", "astronaut", "hubble_deep_field"):
        (portfolio / f"{name}.jpg").write_bytes((PHOTOS / f"{name}.jpg").read_bytes())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MONDRIAN_HOME": str(home)}
    env |= {"MONDRIAN_MAX_TEXT_CHARS": "8", "MONDRIAN_MAX_LIST_ITEMS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mondrian", "index", str(portfolio), "--advisor", "fan_ho"]
    command += ["--model", str(tiny_model), "--backend", "transformers", "--device", "cpu"]
    done = subprocess.run(
        [*command, "--no-progress"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    server = ServeProcess(home, tiny_model, MONDRIAN_MAX_TEXT_CHARS="60")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def only_advisors(page, *ids: str) -> None:
    for box in page.locator("input[name=advisor]").all():
        box.set_checked(box.get_attribute("value") in ids)


def record_stages(page) -> list[str]:
    """Every text the home page's job rows show, as they change."""
    seen: list[str] = []
    page.expose_function("recordStage", lambda text: seen.append(text))
    page.evaluate(
        """() => new MutationObserver(() => {
            for (const el of document.querySelectorAll('.job-phase')) {
                window.recordStage(el.textContent);
            }
        }).observe(document.getElementById('job-list'),
                   {subtree: true, childList: true, characterData: true})"""
    )
    return seen


def in_stage_order(texts: list[str]) -> bool:
    ranks = []
    for text in texts:
        rank = next((i for i, p in enumerate(STAGE_TEXTS) if p.fullmatch(text)), None)
        if rank is None:
            return False
        ranks.append(rank)
    return ranks == sorted(ranks)


@pytest.fixture(scope="module")
def rag_job(studio, browser) -> dict:
    """A rag critique by Fan Ho submitted through the page, with the stages it showed."""
    context = browser.new_context(base_url=studio.url)
    page = context.new_page()
    page.goto("/")
    only_advisors(page, "fan_ho")
    page.locator("#mode-select").select_option("rag")
    page.locator("#photo-input").set_input_files(PHOTOS / "coffee.jpg")
    seen = record_stages(page)
    page.get_by_role("button", name="Critique my photo").click()
    page.wait_for_url(JOB_URL, timeout=WAIT_MS)
    job_id = page.url.rsplit("/", 1)[1]
    context.close()
    job = httpx.get(f"{studio.url}/jobs/{job_id}").json()
    return {
        "id": job_id,
        "job": job,
        "stages": [t for i, t in enumerate(seen) if t not in seen[:i]],
    }


def test_the_page_names_each_stage_as_the_job_runs(rag_job, page):
    stages = rag_job["stages"]
    assert stages and in_stage_order(stages), stages
    assert any(re.fullmatch(r"critiquing \(\d+ tokens so far\)", s) for s in stages), stages
    # Each stage's words, from the state the events stream sends (studio.js `describe`).
    page.goto("/")
    said = page.evaluate(
        """() => [
            describe({stage: "queued", position: 3}),
            describe({stage: "profiling"}),
            describe({stage: "retrieving"}),
            describe({stage: "critiquing", tokens: 42, progress: 0.3}),
            describe({phase: "generating", progress: 0.25}),
            describe({stage: "done"}),
        ]"""
    )
    assert said == [
        "queued (position 3)",
        "profiling the photo",
        "retrieving exemplars",
        "critiquing (42 tokens so far)",
        "critiquing (25%)",  # the polling fallback: GET /jobs/{id} has no stage
        "done",
    ]


def test_the_critique_page_shows_radar_facts_exemplars(rag_job, page, studio, shots):
    job, result = rag_job["job"], rag_job["job"]["result"]
    assert job["mode_used"] == "rag" and result["references"]
    page.goto(f"/studio/jobs/{rag_job['id']}")
    radar = page.locator("#radar svg.radar-chart")
    assert radar.is_visible()
    assert radar.locator("polygon.photo").count() == 1
    assert radar.locator("polygon.reference").count() == 1  # Fan Ho's portfolio means
    assert "Scores out of 10" in radar.locator("title").text_content()
    # The measured facts, each a row; each check beside its dimension or in the list.
    assert page.locator("#measured").is_visible()
    assert page.locator("#measured tr[data-fact]").count() == len(result["facts"])
    for check in result["checks"]:
        assert page.get_by_text(check["message"]).first.is_visible()
    # The exemplars: one thumbnail each, loaded from the studio's route, with its scores.
    exemplars = page.locator("#exemplars .exemplar")
    assert exemplars.count() == len(result["references"])
    for i, ref in enumerate(result["references"]):
        item = exemplars.nth(i)
        img = item.locator("img")
        img.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=img.element_handle()
        )
        assert img.get_attribute("src") == f"/studio/jobs/{rag_job['id']}/exemplars/{i}"
        assert img.get_attribute("alt")
        assert item.locator(".exemplar-scores div").count() == len(ref["scores"])
    page.screenshot(path=shots / "studio-critique-rag-desktop.png", full_page=True)

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-critique-rag-phone.png", full_page=True)


def test_markdown_and_pdf_download_from_the_page(rag_job, page, tmp_path):
    page.goto(f"/studio/jobs/{rag_job['id']}")
    critique = rag_job["job"]["result"]["critique"]
    with page.expect_download() as md:
        page.get_by_role("link", name="Download Markdown").click()
    assert md.value.suggested_filename == f"critique-{rag_job['id']}.md"
    text = Path(md.value.path()).read_text()
    assert text.startswith("# ") and f"{critique['overall_score']:.2f}/10" in text
    with page.expect_download() as pdf:
        page.get_by_role("link", name="Download PDF").click()
    assert pdf.value.suggested_filename == f"critique-{rag_job['id']}.pdf"
    assert Path(pdf.value.path()).read_bytes().startswith(b"%PDF-")


def test_the_print_layout(rag_job, page, shots, tmp_path):
    page.goto(f"/studio/jobs/{rag_job['id']}")
    assert page.locator("#print").is_visible()  # the script shows its Print button
    page.emulate_media(media="print")
    # No navigation, no buttons on paper; the critique, the radar and the facts stay.
    for hidden in (".top", ".downloads", "#print"):
        assert page.locator(hidden).is_hidden(), hidden
    for shown in ("#overall-score", "#radar svg", ".dim-list", "#measured", "#exemplars"):
        assert page.locator(shown).first.is_visible(), shown
    assert page.locator("#disclaimer").is_visible()
    style = page.evaluate(
        """() => {
            const dim = getComputedStyle(document.querySelector('.dim'));
            const grid = getComputedStyle(document.querySelector('.dim-list'));
            return {breakInside: dim.breakInside,
                    columns: grid.gridTemplateColumns.split(' ').length};
        }"""
    )
    assert style == {"breakInside": "avoid", "columns": 2}
    # The exemplars' thumbnails are on paper too (loaded eagerly: print does not scroll).
    loaded = "[...document.querySelectorAll('.exemplar img')].every(i => i.naturalWidth > 0)"
    page.wait_for_function(loaded)
    page.screenshot(path=shots / "studio-critique-print.png", full_page=True)
    # Printed to A4 by Chromium itself: a few pages, not one per dimension.
    out = tmp_path / "printed.pdf"
    page.pdf(path=out, format="A4", print_background=True)
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", out.read_bytes()))
    assert 1 <= pages <= 6, pages
    page.emulate_media(media="screen")
    assert page.locator(".downloads").is_visible()


def test_two_advisors_side_by_side(page, studio, shots):
    page.goto("/")
    only_advisors(page, "ansel", "fan_ho")
    page.locator("#mode-select").select_option("baseline")
    page.locator("#photo-input").set_input_files(PHOTOS / "chelsea.jpg")
    page.get_by_role("button", name="Critique my photo").click()
    links = page.locator("#job-list .job-link")
    links.nth(1).wait_for(timeout=WAIT_MS)
    ids = [row.get_attribute("data-job-id") for row in page.locator("#job-list .job").all()]
    compare = page.locator("#compare-link")
    assert compare.is_visible()
    compare.click()
    page.wait_for_url(re.compile(r".*/compare$"))
    columns = page.locator("ul.compare-columns > li.compare-column[data-job-id]")
    assert sorted(c.get_attribute("data-job-id") for c in columns.all()) == sorted(ids)
    names = sorted(c.locator("h2 a").inner_text() for c in columns.all())
    assert names == ["Ansel Adams", "Fan Ho"]
    assert page.locator(".column-radar svg.radar-chart").count() == 2
    results = {i: httpx.get(f"{studio.url}/jobs/{i}").json()["result"] for i in ids}
    order = [c.get_attribute("data-job-id") for c in columns.all()]
    for row in page.locator(".compare-table tr[data-dimension]").all():
        key = row.get_attribute("data-dimension")
        cells = [int(re.match(r"\d+", c.inner_text()).group()) for c in row.locator("td").all()]
        assert cells == [results[i]["critique"]["dimensions"][key]["score"] for i in order]
    page.screenshot(path=shots / "studio-compare-desktop.png", full_page=True)
    # From each critique, a link back to the comparison.
    for job_id in ids:
        page.goto(f"/studio/jobs/{job_id}")
        assert (
            page.locator("#compare-link").get_attribute("href") == f"/studio/jobs/{job_id}/compare"
        )
    page.set_viewport_size(PHONE)
    page.goto(f"/studio/jobs/{ids[0]}/compare")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-compare-phone.png", full_page=True)


def test_the_critique_page_by_keyboard(rag_job, page):
    page.goto(f"/studio/jobs/{rag_job['id']}")
    # Every image has a text alternative; the scrolling facts table is a labelled region
    # the keyboard can reach.
    assert page.evaluate("[...document.images].every(img => img.alt.trim().length > 0)")
    region = page.get_by_role("region", name="Measured facts")
    region.focus()
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Measured facts"
    page.get_by_role("link", name="Download PDF").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Download the HTML report"
