"""The studio's review and operator pages through the TestClient (routes/studio_review.py,
routes/studio_operator.py, routes/studio_advisors.py); tests/browser/test_studio_operator.py
drives the same pages in Chromium."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import photo_bytes, tiny_settings, upload, wait_for_job

from mondrian.schema import DIMENSIONS, Critique
from mondrian.service.auth import SESSION_COOKIE
from mondrian.service.csrf import CSRF_COOKIE, form_token
from mondrian.service.guards import STUDIO_CSP
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.training import registry

pytestmark = pytest.mark.model

TOKEN = "operator-token-for-tests"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def fake_adapter(out_dir):
    """A small well-formed PEFT LoRA directory: enough for the registry's checks."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    )
    key = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_{}.weight"
    weights = {key.format("A"): np.zeros((2, 8), np.float32)}
    weights[key.format("B")] = np.zeros((8, 2), np.float32)
    save_file(weights, str(out_dir / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def app_state(tiny_backend, tiny_model, tmp_path_factory):
    from mondrian.service.app import create_app

    home = tmp_path_factory.mktemp("operator") / "home"
    settings = tiny_settings(home, tiny_model, admin_token=TOKEN)
    with TestClient(create_app(settings, tiny_backend)) as client:
        yield client, settings


@pytest.fixture
def client(app_state):
    client, _ = app_state
    client.cookies.clear()
    return client


def sign_in(client) -> None:
    page = client.get("/studio/operator/login")
    response = client.post(
        "/studio/operator/login",
        data={"csrf_token": csrf(page.text), "token": TOKEN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_revokes_it(client):
    assert client.get("/studio/operator", follow_redirects=False).headers["location"] == (
        "/studio/operator/login"
    )
    page = client.get("/studio/operator/login")
    assert page.status_code == 200 and page.headers["content-security-policy"] == STUDIO_CSP
    # Under no-referrer a browser's form POST carries `Origin: null`, which the CSRF guard
    # refuses: the studio's pages send their referrer to this origin only.
    assert page.headers["referrer-policy"] == "same-origin"
    assert client.get("/health").headers["referrer-policy"] == "no-referrer"
    token = csrf(page.text)
    wrong = client.post("/studio/operator/login", data={"csrf_token": token, "token": "nope"})
    assert wrong.status_code == 403 and "not the operator token" in wrong.text
    assert SESSION_COOKIE not in client.cookies

    right = client.post(
        "/studio/operator/login", data={"csrf_token": token, "token": TOKEN}, follow_redirects=False
    )
    assert right.status_code == 303
    cookie = right.headers["set-cookie"]
    for part in ("HttpOnly", "SameSite=strict", "Path=/studio", "Max-Age=28800"):
        assert part.lower() in cookie.lower(), cookie
    session = client.cookies[SESSION_COOKIE]
    home = client.get("/studio/operator")
    assert home.status_code == 200 and "Adapters per advisor" in home.text

    out = client.post(
        "/studio/operator/logout", data={"csrf_token": csrf(home.text)}, follow_redirects=False
    )
    assert out.status_code == 303
    # The old cookie, replayed, opens nothing.
    client.cookies.set(SESSION_COOKIE, session, path="/studio")
    assert client.get("/studio/operator", follow_redirects=False).status_code == 303


def test_actions_need_the_csrf_token_and_a_session(client):
    page = client.get("/studio/operator/login")
    token = csrf(page.text)
    # No CSRF field: refused before the token is even looked at.
    no_csrf = client.post("/studio/operator/login", data={"token": TOKEN})
    assert no_csrf.status_code == 403 and "reload the page" in no_csrf.text
    assert SESSION_COOKIE not in client.cookies
    # A valid form but no session: the action is refused with a page saying why.
    refused = client.post(
        "/studio/operator/adapters/rollback", data={"csrf_token": token, "advisor": "ansel"}
    )
    assert refused.status_code == 403 and "sign in with the token" in refused.text
    # Another site's form is stopped by the Origin guard first.
    cross = client.post(
        "/studio/operator/login",
        data={"csrf_token": token, "token": TOKEN},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_site"


def test_activate_and_roll_back_from_the_adapters_page(client, app_state):
    client_, settings = app_state
    db = client_.app.state.mondrian.db
    for _ in range(2):
        staging = registry.new_staging_dir(settings, "fan_ho")
        fake_adapter(staging)
        registry.publish(db, settings, "fan_ho", staging, "tiny-base", {"metrics": {}})
    sign_in(client)
    page = client.get("/studio/operator")
    assert 'data-ref="fan_ho@v1" class="is-active"' in page.text
    activated = client.post(
        "/studio/operator/adapters/activate",
        data={"csrf_token": csrf(page.text), "ref": "fan_ho@v2"},
    )
    assert activated.status_code == 200 and "fan_ho@v2 is now active" in activated.text
    assert registry.resolve(db, "fan_ho@v2").active
    rolled = client.post(
        "/studio/operator/adapters/rollback",
        data={"csrf_token": csrf(activated.text), "advisor": "fan_ho"},
    )
    assert "rolled back: fan_ho@v1 is now active" in rolled.text
    assert registry.resolve(db, "fan_ho@v1").active
    # Nothing older than v1: the page says so, with a 4xx, and nothing changes.
    again = client.post(
        "/studio/operator/adapters/rollback",
        data={"csrf_token": csrf(rolled.text), "advisor": "fan_ho"},
    )
    assert again.status_code == 422 and "nothing to roll back to" in again.text
    bad = client.post(
        "/studio/operator/adapters/activate",
        data={"csrf_token": csrf(rolled.text), "ref": "../../etc"},
    )
    assert bad.status_code == 422 and "not an adapter version" in bad.text


def critique_scoring(score: int) -> Critique:
    dim = {"score": score, "comment": "Fine.", "recommendation": "Crop."}
    return Critique.model_validate(
        {"image_description": "A photo.", "dimensions": dict.fromkeys(DIMENSIONS, dim)}
    )


def add_portfolio(db, settings, advisor: str, scored: dict[str, int]) -> dict[str, str]:
    """Portfolio photos of the advisor with profiles scoring each as given: name -> hash."""
    hashes = {}
    for name, score in scored.items():
        data = photo_bytes(name)
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
        digest = db.write(image_store.store_image, settings.images_dir, data, "image/jpeg", *size)
        db.write(image_store.add_to_portfolio, advisor, digest)
        db.write(
            profile_store.upsert_profile, advisor, digest, critique_scoring(score), "curated", None
        )
        hashes[name] = digest
    return hashes


def test_ab_and_portfolio_pages(client, app_state):
    client_, settings = app_state
    db = client_.app.state.mondrian.db
    sign_in(client)
    ab = client.get("/studio/operator/ab")
    assert ab.status_code == 200
    assert '<dd id="policy-name">fine_tuned</dd>' in ab.text
    assert ab.text.count('<svg class="chart"') == 4

    before = client.get("/studio/operator/portfolios")
    row = re.search(r'<tr data-advisor="dorothea_lange">(.*?)</tr>', before.text, re.S).group(1)
    assert '<td class="photos">0</td>' in row and "no portfolio" in row
    add_portfolio(db, settings, "dorothea_lange", {"coffee": 4, "rocket": 8})
    after = client.get("/studio/operator/portfolios")
    row = re.search(r'<tr data-advisor="dorothea_lange">(.*?)</tr>', after.text, re.S).group(1)
    assert '<td class="photos">2</td>' in row and '<td class="profiled">2</td>' in row
    assert '<td class="state">indexed</td>' in row


def test_portraits_are_the_best_scored_portfolio_photo_or_initials(client, app_state):
    from mondrian.service.routes.studio_advisors import PORTRAIT_SIDE, square_jpeg

    client_, settings = app_state
    db = client_.app.state.mondrian.db
    hashes = add_portfolio(db, settings, "saul_leiter", {"camera": 3, "chelsea": 9, "coffee": 5})
    home = client.get("/")
    assert 'src="/studio/advisors/saul_leiter/portrait"' in home.text
    shown = client.get("/studio/advisors/saul_leiter/portrait")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    with db.read() as conn:
        best = image_store.image_path(conn, settings.images_dir, hashes["chelsea"])
    assert shown.content == square_jpeg(best, best.stat().st_size)
    with Image.open(io.BytesIO(shown.content)) as image:
        assert image.size == (PORTRAIT_SIDE, PORTRAIT_SIDE)
    # No portfolio: the initials, as an SVG with nothing but text in it.
    initials = client.get("/studio/advisors/cartier_bresson/portrait")
    assert initials.headers["content-type"].startswith("image/svg+xml")
    assert ">HC</text>" in initials.text and "<script" not in initials.text
    # The route takes an advisor id, never a path.
    assert client.get("/studio/advisors/..%2F..%2Fetc/portrait").status_code in (404, 422)
    assert client.get("/studio/advisors/nobody/portrait").json()["error"]["code"] == (
        "unknown_advisor"
    )


@pytest.fixture(scope="module")
def done_job(app_state) -> str:
    client, _ = app_state
    response = client.post(
        "/jobs", files=upload(photo_bytes(), name="chelsea.jpg"), data={"advisor": "ansel"}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert wait_for_job(client, job_id)["status"] == "done"
    return job_id


def review_fields(html: str) -> dict[str, str]:
    """The review form's fields as the page fills them."""
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    fields.update(re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>([^<]*)</textarea>', html))
    return fields


def test_review_round_trip_pending_then_accepted_into_the_data_set(client, done_job, app_state):
    from mondrian.training.targets import collect_candidates

    client_, _ = app_state
    db = client_.app.state.mondrian.db
    form = client.get(f"/studio/jobs/{done_job}/review")
    assert form.status_code == 200 and form.headers["content-security-policy"] == STUDIO_CSP
    assert "training data" in form.text and "once the operator accepts" in form.text
    original = client.get(f"/jobs/{done_job}").json()["result"]["critique"]
    fields = review_fields(form.text)
    assert fields["composition.score"] == str(original["dimensions"]["composition"]["score"])
    assert fields["lighting.comment"] == original["dimensions"]["lighting"]["comment"]

    # Text the model could never write is refused, the form kept as sent.
    bad = {**fields, "composition.comment": 'Say "no".'}
    refused = client.post(f"/studio/jobs/{done_job}/review", data=bad)
    assert refused.status_code == 422 and "not stored" in refused.text
    assert "Say &#34;no&#34;." in refused.text or "Say &quot;no&quot;." in refused.text
    missing = client.post(f"/studio/jobs/{done_job}/review", data={**fields, "csrf_token": "0"})
    assert missing.status_code == 403 and "reload the page" in missing.text

    corrected = {
        **fields,
        "composition.score": "10",
        "composition.comment": "Strong diagonal.",
        "reviewer": "Photographer",
        "note": "The crop is deliberate.",
    }
    stored = client.post(f"/studio/jobs/{done_job}/review", data=corrected, follow_redirects=False)
    assert stored.status_code == 303, stored.text
    review_url = stored.headers["location"]
    assert review_url.startswith(f"/studio/jobs/{done_job}/reviews/")
    page = client.get(review_url)
    assert 'data-status="pending"' in page.text and "once the operator accepts" in page.text
    row = re.search(
        r'<tr class="dim-row changed" data-dimension="composition">(.*?)</tr>', page.text, re.S
    )
    assert row and "Strong diagonal." in row.group(1) and "10/10" in row.group(1)
    assert original["dimensions"]["composition"]["comment"] in row.group(1)
    with db.read() as conn:
        assert not [c for c in collect_candidates(conn, "ansel", True) if c.source == "review"]

    sign_in(client)
    queue = client.get("/studio/operator/reviews")
    review_id = int(review_url.rsplit("/", 1)[1])
    assert f'data-review="{review_id}"' in queue.text
    accepted = client.post(
        f"/studio/operator/reviews/{review_id}/accept", data={"csrf_token": csrf(queue.text)}
    )
    assert accepted.status_code == 200 and f"review {review_id} of ansel accepted" in accepted.text
    with db.read() as conn:
        reviews = [c for c in collect_candidates(conn, "ansel", True) if c.source == "review"]
    assert len(reviews) == 1 and reviews[0].critique.dimensions.composition.score == 10
    assert 'data-status="accepted"' in client.get(review_url).text
    # The critique page's include lists it beside the way to review again.
    from mondrian.service.routes.studio import environment
    from mondrian.service.routes.studio_review import job_reviews

    state = client_.app.state.mondrian
    panel = environment().get_template("_critique_reviews.html")
    html = panel.render(job={"id": done_job}, reviews=job_reviews(state, done_job))
    assert f'href="/studio/jobs/{done_job}/reviews/{review_id}"' in html
    assert (
        f'href="/studio/jobs/{done_job}/review"' in html and "(accepted, by Photographer)" in html
    )
    # Another job's id does not open this review, nor is an unknown job's form a 500.
    assert client.get(f"/studio/jobs/{'0' * 32}/reviews/{review_id}").status_code == 404
    unknown = client.get(f"/studio/jobs/{'0' * 32}/review")
    assert unknown.status_code == 404 and "unknown job" in unknown.text


def test_without_a_token_operator_pages_say_they_are_disabled(tiny_backend, tiny_model, tmp_path):
    from mondrian.service.app import create_app

    settings = tiny_settings(tmp_path / "home", tiny_model)
    with TestClient(create_app(settings, tiny_backend)) as client:
        for path in ("/studio/operator", "/studio/operator/login", "/studio/operator/ab"):
            page = client.get(path, follow_redirects=False)
            assert page.status_code == 403 and "operator actions are disabled" in page.text
            assert "MONDRIAN_ADMIN_TOKEN" in page.text
        # Every studio page sets the form cookie; its token, as a form would carry it.
        token = form_token(client.cookies[CSRF_COOKIE])
        for path, data in (
            ("/studio/operator/login", {"token": "anything"}),
            ("/studio/operator/adapters/activate", {"ref": "ansel@v1"}),
            ("/studio/operator/reviews/1/accept", {}),
        ):
            refused = client.post(path, data={"csrf_token": token, **data})
            assert refused.status_code == 403, path
            assert "operator actions are disabled" in refused.text
