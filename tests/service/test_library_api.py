"""The library over HTTP (service/routes/library.py, routes/studio_library.py) through the
TestClient on the tiny model: delete, batches, sidecars, the history and shoot pages."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import assert_error, photo_bytes, tiny_settings, upload, wait_for_job

from mondrian.reports import xmp
from mondrian.schema import example_critique
from mondrian.service.guards import STUDIO_CSP
from mondrian.storage import images, reviews

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def client(tiny_backend, tiny_model, tmp_path_factory):
    from mondrian.service.app import create_app

    home = tmp_path_factory.mktemp("library") / "home"
    with TestClient(create_app(tiny_settings(home, tiny_model), tiny_backend)) as test_client:
        yield test_client


def db(client):
    return client.app.state.mondrian.db


def queue(client, photo="chelsea", advisor="ansel", name=None) -> str:
    files = upload(photo_bytes(photo), name=name or f"{photo}.jpg")
    response = client.post("/jobs", files=files, data={"advisor": advisor})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert wait_for_job(client, job_id)["status"] == "done"
    return job_id


@pytest.fixture(scope="module")
def shoot(client) -> dict:
    """A batch of three photos by ansel, and one of them by fan_ho too, all done."""
    created = client.post("/batches")
    assert created.status_code == 201, created.text
    batch = created.json()
    assert created.headers["location"] == f"/batches/{batch['id']}"
    ids = []
    for photo, advisor in [
        ("chelsea", "ansel"), ("coffee", "ansel"), ("rocket", "ansel"), ("chelsea", "fan_ho")
    ]:  # fmt: skip
        files = upload(photo_bytes(photo), name=f"C:\\shoot\\{photo}.jpg")
        response = client.post(batch["links"]["jobs"], files=files, data={"advisor": advisor})
        assert response.status_code == 202, response.text
        assert response.json()["photo"] == f"{photo}.jpg"
        ids.append(response.json()["job"])
    for job_id in ids:
        assert wait_for_job(client, job_id)["status"] == "done"
    return {"id": batch["id"], "jobs": ids}


def test_a_batch_lists_its_photos_with_scores_and_stars(client, shoot):
    body = client.get(f"/batches/{shoot['id']}").json()
    assert body["source"] == "api"
    studio = client.post("/batches?source=studio").json()
    assert client.get(studio["links"]["self"]).json()["source"] == "studio"
    assert client.post("/batches?source=cli").status_code == 422  # only the CLI makes those
    assert [p["job"] for p in body["photos"]] == shoot["jobs"]
    for photo in body["photos"]:
        assert photo["status"] == "done" and len(photo["dimensions"]) == 8
        assert photo["stars"] == xmp.stars(photo["score"])


def test_an_unknown_batch_stores_nothing(client):
    with db(client).read() as conn:
        before = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    response = client.post(
        f"/batches/{'a' * 32}/jobs", files=upload(photo_bytes("camera")), data={"advisor": "ansel"}
    )
    assert_error(response, 404, "unknown_batch")
    assert_error(client.get("/batches/..etc"), 404, "unknown_batch")
    with db(client).read() as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == before


def test_the_sidecars_zip_rates_each_photo_once(client, shoot):
    response = client.get(f"/batches/{shoot['id']}/sidecars.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    photos = client.get(f"/batches/{shoot['id']}").json()["photos"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(
            f"{p}{ext}" for p in ("chelsea", "coffee", "rocket") for ext in (".jpg.xmp", ".xmp")
        )
        # chelsea has two critiques: its rating is from their mean.
        chelsea = [p["score"] for p in photos if p["photo"] == "chelsea.jpg"]
        expected = xmp.stars(sum(chelsea) / len(chelsea))
        assert xmp.read_rating(archive.read("chelsea.jpg.xmp")) == expected
        assert archive.read("chelsea.xmp") == archive.read("chelsea.jpg.xmp")


def test_one_sidecar_per_critique(client, shoot):
    job_id = shoot["jobs"][1]
    response = client.get(f"/jobs/{job_id}/sidecar.xmp")
    assert response.status_code == 200
    assert 'filename="coffee.jpg.xmp"' in response.headers["content-disposition"]
    score = client.get(f"/jobs/{job_id}").json()["result"]["critique"]["overall_score"]
    assert xmp.read_rating(response.content) == xmp.stars(score)


def test_delete_removes_the_job_and_its_unshared_photo(client):
    job_id = queue(client, "hubble_deep_field")
    with db(client).read() as conn:
        image_hash = conn.execute("SELECT image_hash FROM jobs WHERE id = ?", (job_id,)).fetchone()[
            0
        ]
        path = images.image_path(conn, client.app.state.mondrian.settings.images_dir, image_hash)
    assert path.is_file()
    response = client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": job_id, "photo_removed": True}
    assert not path.exists()
    assert_error(client.get(f"/jobs/{job_id}"), 404, "unknown_job")
    assert_error(client.delete(f"/jobs/{job_id}"), 404, "unknown_job")


def test_delete_from_another_site_is_refused(client):
    job_id = queue(client, "astronaut")
    response = client.delete(f"/jobs/{job_id}", headers={"Origin": "http://evil.example"})
    assert_error(response, 403, "cross_site")
    assert client.get(f"/jobs/{job_id}").status_code == 200


def test_a_reviewed_job_is_kept(client):
    job_id = queue(client, "camera")
    db(client).write(reviews.add_review, job_id, example_critique(8), author="client:test")
    assert_error(client.delete(f"/jobs/{job_id}"), 409, "has_reviews", "review")
    assert client.get(f"/jobs/{job_id}").status_code == 200


def test_the_history_page_shows_thumbnails_and_filters(client, shoot):
    response = client.get("/studio/history")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == STUDIO_CSP
    html = response.text
    for job_id in shoot["jobs"]:
        assert f'src="/studio/thumbs/{job_id}.jpg"' in html
        assert f'href="/studio/jobs/{job_id}"' in html
    assert f'href="/studio/shoots/{shoot["id"]}"' in html  # a shoot's critique leads to it
    fan_ho = client.get("/studio/history?advisor=fan_ho").text
    assert f"/studio/thumbs/{shoot['jobs'][3]}.jpg" in fan_ho
    assert f"/studio/thumbs/{shoot['jobs'][0]}.jpg" not in fan_ho
    assert "No critiques match" in client.get("/studio/history?mode=lora").text
    assert_error(client.get("/studio/history?mode=magic"), 422, "unknown_mode")
    assert_error(client.get("/studio/history?advisor=..%2Fx"), 422, "invalid_advisor_id")
    assert 'src="/static/studio/library/library.js"' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "style=" not in html


def test_a_thumbnail_is_a_small_jpeg_by_job_id(client, shoot):
    response = client.get(f"/studio/thumbs/{shoot['jobs'][0]}.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        assert max(image.size) <= 320
    assert client.get("/studio/thumbs/..%2F..%2Fetc%2Fpasswd.jpg").status_code == 404


def test_the_studio_delete_form_returns_to_the_studio_only(client):
    job_id = queue(client, "coffee", name="delete-me.jpg")
    response = client.post(
        f"/studio/jobs/{job_id}/delete", data={"back": "//evil.example/x"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/studio/history"
    assert client.get(f"/jobs/{job_id}").status_code == 404


def test_the_studio_delete_form_says_why_a_job_stays(client):
    job_id = queue(client, "rocket", name="kept.jpg")
    db(client).write(reviews.add_review, job_id, example_critique(7), author="client:test")
    response = client.post(f"/studio/jobs/{job_id}/delete", follow_redirects=False)
    assert response.status_code == 409
    assert 'id="library-error"' in response.text and "review" in response.text


def test_the_shoot_page_sorts_and_filters(client, shoot):
    def order(query: str) -> list[float]:
        html = client.get(f"/studio/shoots/{shoot['id']}?{query}").text
        return [float(v) for v in re.findall(r'data-sort-value="([0-9.]+)"', html)]

    best_first = order("sort=overall")
    assert len(best_first) == 4 and best_first == sorted(best_first, reverse=True)
    assert order("sort=composition&order=asc") == sorted(order("sort=composition&order=asc"))
    assert len(order("sort=composition")) == 4
    top = best_first[0]
    assert order(f"sort=overall&min={top}") == [v for v in best_first if v >= top]
    html = client.get(f"/studio/shoots/{shoot['id']}?advisor=fan_ho").text
    assert html.count('class="thumb-card"') == 1
    assert f'href="/batches/{shoot["id"]}/sidecars.zip"' in html
    assert_error(client.get(f"/studio/shoots/{shoot['id']}?sort=bogus"), 422, "invalid_input")
    assert_error(client.get(f"/studio/shoots/{shoot['id']}?min=11"), 422, "bad_min")
    assert_error(client.get(f"/studio/shoots/{shoot['id']}?min=nan"), 422, "bad_min")
    assert len(order("sort=overall&min=&advisor=")) == 4  # the form's empty fields
    assert_error(client.get(f"/studio/shoots/{'b' * 32}"), 404, "unknown_batch")


def test_the_shoot_upload_page_and_the_library_files(client):
    html = client.get("/studio/shoot").text
    assert 'id="shoot-input"' in html and " multiple" in html
    assert (
        client.get("/static/studio/library/library.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert client.get("/static/studio/library/library.css").status_code == 200
    assert client.get("/static/studio/library/../../app.py").status_code == 404
