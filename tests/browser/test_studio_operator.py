"""The studio's review and operator pages in Chromium against a real `mondrian serve`
(tests/browser/conftest.py): a review round trip into `mondrian dataset build`, operator
sign-in and adapter activation, operator actions refused without a token and with a wrong
one, advisor portraits on the home page. Screenshots go to the `shots` folder.

This module's `studio` is a server with MONDRIAN_ADMIN_TOKEN set, on a home prepared before
it starts: a portfolio for ansel (profiled, so it has a portrait) and two adapter versions
of fan_ho (fake, well-formed PEFT folders: activation checks the files, never loads them).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_process import ServeProcess

pytestmark = [pytest.mark.browser, pytest.mark.model]

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
TOKEN = "browser-operator-token"
PHONE = {"width": 390, "height": 844}  # as conftest.PHONE
WAIT_S = 300.0  # a bound for a hung job on a loaded machine, not a speed check


def fake_adapter(out_dir: Path) -> None:
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    )
    key = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_{}.weight"
    weights = {key.format("A"): np.zeros((2, 8), np.float32)}
    weights[key.format("B")] = np.zeros((8, 2), np.float32)
    save_file(weights, str(out_dir / "adapter_model.safetensors"))


def prepare_home(home: Path) -> None:
    from mondrian.config import Settings
    from mondrian.schema import DIMENSIONS, Critique
    from mondrian.storage import images, profiles
    from mondrian.storage.bootstrap import open_state
    from mondrian.training import registry

    settings = Settings(home=home)
    db = open_state(settings)
    try:
        for name, score in (("rocket", 4), ("coffee", 9)):
            data = (PHOTOS / f"{name}.jpg").read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                size = image.size
            digest = db.write(images.store_image, settings.images_dir, data, "image/jpeg", *size)
            db.write(images.add_to_portfolio, "ansel", digest, name)
            dim = {"score": score, "comment": "Tones.", "recommendation": "Wait."}
            critique = Critique.model_validate(
                {"image_description": name, "dimensions": dict.fromkeys(DIMENSIONS, dim)}
            )
            db.write(profiles.upsert_profile, "ansel", digest, critique, "curated", None)
        for _ in range(2):
            staging = registry.new_staging_dir(settings, "fan_ho")
            fake_adapter(staging)
            registry.publish(db, settings, "fan_ho", staging, "tiny-base", {"metrics": {}})
    finally:
        db.close()


@pytest.fixture(scope="module")
def studio(browser, tiny_model, tmp_path_factory) -> Iterator[ServeProcess]:
    home = tmp_path_factory.mktemp("browser-ops") / "home"
    prepare_home(home)
    server = ServeProcess(home, tiny_model, MONDRIAN_ADMIN_TOKEN=TOKEN)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def done_job(server: ServeProcess, photo: str = "chelsea") -> str:
    with server.client() as client:
        response = client.post(
            "/jobs",
            files={"image": (f"{photo}.jpg", (PHOTOS / f"{photo}.jpg").read_bytes(), "image/jpeg")},
            data={"advisor": "ansel"},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + WAIT_S
        while (status := client.get(f"/jobs/{job_id}").json()["status"]) not in ("done", "failed"):
            assert time.monotonic() < deadline, f"job {job_id} still {status}"
            time.sleep(0.2)
    assert status == "done"
    return job_id


def sign_in(page, token: str = TOKEN) -> None:
    page.goto("/studio/operator/login")
    page.get_by_label("Operator token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_review_round_trip_into_dataset_build(page, studio, shots, tmp_path):
    job_id = done_job(studio)
    page.goto(f"/studio/jobs/{job_id}/review")
    assert "training data" in page.locator("#training-notice").inner_text()
    assert "once the operator accepts" in page.locator("#training-notice").inner_text()
    composition = page.locator('[data-dimension="composition"]')
    composition.get_by_label("Score (0 to 10)").fill("10")
    composition.get_by_label("Comment").fill("Strong diagonal, held to the corner.")
    page.get_by_label("Your name").fill("Ansel's reader")
    page.screenshot(path=shots / "studio-review-form-desktop.png", full_page=True)
    page.get_by_role("button", name="Store my review").click()
    page.wait_for_url(re.compile(rf".*/studio/jobs/{job_id}/reviews/\d+$"))
    assert page.locator("#review-status").get_attribute("data-status") == "pending"
    row = page.locator('tr.dim-row[data-dimension="composition"]')
    assert "changed" in row.get_attribute("class")
    assert "Strong diagonal" in row.locator("td.after").inner_text()
    assert "10/10" in row.locator("td.after").inner_text()
    original = httpx.get(f"{studio.url}/jobs/{job_id}").json()["result"]["critique"]
    before = original["dimensions"]["composition"]
    assert before["comment"] in row.locator("td.before").inner_text()
    page.screenshot(path=shots / "studio-review-side-by-side-desktop.png", full_page=True)
    review_url = page.url

    # The operator accepts it from the reviews page; then it is training data.
    sign_in(page)
    page.goto("/studio/operator/reviews")
    review_id = review_url.rsplit("/", 1)[1]
    page.get_by_role("button", name=f"Accept review {review_id}").click()
    assert f"review {review_id} of ansel accepted" in page.locator("#notice").inner_text()
    page.goto(review_url)
    assert page.locator("#review-status").get_attribute("data-status") == "accepted"
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-review-side-by-side-phone.png", full_page=True)

    out = tmp_path / "dataset"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONDRIAN_")}
    env.update(MONDRIAN_HOME=str(studio.home), PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "mondrian", "dataset", "build", "--advisor", "ansel"]
    build = subprocess.run(
        [*command, "--include-reviews", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    manifest = json.loads(build.stdout)
    assert manifest["sources"]["review"] == 1, manifest
    lines = [
        json.loads(line)
        for split in manifest["splits"].values()
        for line in (out / split["file"]).read_text().splitlines()
    ]
    targets = [json.dumps(line) for line in lines]
    assert any("Strong diagonal, held to the corner." in t for t in targets)


def test_operator_signs_in_and_activates_an_adapter(page, studio, shots):
    sign_in(page, "not-the-token")
    assert "not the operator token" in page.locator("#login-error").inner_text()
    page.goto("/studio/operator")
    assert page.url.endswith("/studio/operator/login")  # no session: the sign-in form

    sign_in(page)
    page.wait_for_url(re.compile(r".*/studio/operator$"))
    fan_ho = page.locator("#adapters-fan_ho")
    assert fan_ho.locator(".active-ref").inner_text() == "fan_ho@v1"
    page.screenshot(path=shots / "studio-operator-adapters-desktop.png", full_page=True)
    fan_ho.get_by_role("button", name="Activate fan_ho@v2").click()
    assert page.locator("#notice").inner_text() == "fan_ho@v2 is now active"
    assert httpx.get(f"{studio.url}/advisors/fan_ho").json()["active_adapter"] == "fan_ho@v2"
    page.locator("#adapters-fan_ho").get_by_role("button", name="Roll back Fan Ho").click()
    assert "fan_ho@v1 is now active" in page.locator("#notice").inner_text()
    assert httpx.get(f"{studio.url}/advisors/fan_ho").json()["active_adapter"] == "fan_ho@v1"

    page.goto("/studio/operator/ab")
    assert page.locator("#policy-name").inner_text() == "fine_tuned"
    assert page.locator("#ab-charts svg.chart").count() == 4
    page.screenshot(path=shots / "studio-operator-ab-desktop.png", full_page=True)
    page.goto("/studio/operator/portfolios")
    ansel = page.locator('#portfolios tr[data-advisor="ansel"]')
    assert ansel.locator(".photos").inner_text() == "2"
    assert ansel.locator(".state").inner_text() == "indexed"
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "studio-operator-portfolios-phone.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    page.goto("/studio/operator")
    assert page.url.endswith("/studio/operator/login")


def post_form(page, action: str, fields: dict[str, str]) -> None:
    """Submit a form to `action` from the current page, as a page of the studio would."""
    page.evaluate(
        """([action, fields]) => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = action;
            for (const [name, value] of Object.entries(fields)) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = name; input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
        [action, fields],
    )
    page.wait_for_load_state()


def test_an_action_without_a_session_is_refused(page, studio):
    page.goto("/studio/operator/login")
    token = page.locator('input[name="csrf_token"]').get_attribute("value")
    post_form(
        page, "/studio/operator/adapters/rollback", {"csrf_token": token, "advisor": "fan_ho"}
    )
    assert "sign in with the token first" in page.locator("#problem").inner_text()
    assert httpx.get(f"{studio.url}/advisors/fan_ho").json()["active_adapter"] == "fan_ho@v1"


def test_without_a_token_operator_actions_are_refused(browser, tiny_model, tmp_path, shots):
    bare = ServeProcess(tmp_path / "home", tiny_model)
    context = None
    try:
        bare.wait_ready()
        context = browser.new_context(base_url=bare.url)
        page = context.new_page()
        page.goto("/studio/operator")
        message = page.locator("#problem").inner_text()
        assert "operator actions are disabled" in message and "MONDRIAN_ADMIN_TOKEN" in message
        page.screenshot(path=shots / "studio-operator-disabled-desktop.png", full_page=True)
        page.goto("/studio/operator/login")
        assert page.locator("#login-form").count() == 0  # no form to fill in
        post_form(page, "/studio/operator/adapters/activate", {"ref": "ansel@v1"})
        assert "operator actions are disabled" in page.locator("#problem").inner_text()
    finally:
        if context is not None:
            context.close()
        bare.stop()


def test_advisor_cards_show_portraits(page, studio, shots):
    portraits: dict[str, str] = {}

    def seen(response) -> None:
        match = re.search(r"/studio/advisors/([a-z_]+)/portrait$", response.url)
        if match:
            portraits[match.group(1)] = response.headers["content-type"]

    page.on("response", seen)
    page.goto("/")
    cards = page.locator(".card")
    for i in range(cards.count()):
        img = cards.nth(i).locator("img.card-portrait")
        img.wait_for()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=img.element_handle()
        )
    assert portraits["ansel"] == "image/jpeg"  # its best-scored portfolio photo
    assert portraits["fan_ho"].startswith("image/svg+xml")  # no portfolio: initials
    card = page.locator(".card", has=page.locator("#advisor-ansel"))
    assert card.locator(".card-years").inner_text() and card.locator(".card-bio").inner_text()
    page.screenshot(path=shots / "studio-home-portraits-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The portrait sits on the card without covering its checkbox.
    page.locator("#advisor-fan_ho").check()
    assert page.locator("#advisor-fan_ho").is_checked()
    page.screenshot(path=shots / "studio-home-portraits-phone.png", full_page=True)
