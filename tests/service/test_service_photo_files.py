"""Photographers' files over HTTP: a HEIC and a DNG are critiqued from their working copy
(a JPEG keeping the EXIF facts); broken ones are the same JSON 4xx as any bad upload."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import assert_error, tiny_settings, upload

from mondrian.images import read_image
from mondrian.service.app import create_app
from mondrian.storage import images
from raw_samples import bayer_dng

pytestmark = pytest.mark.model


def _heic() -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 15"
    buf = io.BytesIO()
    Image.new("RGB", (120, 90), (40, 90, 160)).save(buf, "HEIF", exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tiny_backend, tiny_model, tmp_path_factory):
    app = create_app(tiny_settings(tmp_path_factory.mktemp("files-home"), tiny_model), tiny_backend)
    with TestClient(app) as client:
        client.db = app.state.mondrian.db
        client.images_dir = app.state.mondrian.settings.images_dir
        yield client


@pytest.mark.parametrize(
    ("name", "make", "camera"),
    [("IMG_0001.HEIC", _heic, "Apple iPhone 15"), ("DSC_0001.DNG", bayer_dng, "Mondrian Test DNG")],
)
def test_a_photographers_file_is_critiqued(client, name, make, camera):
    response = client.post(
        "/analyze",
        files=upload(make(), name, "application/octet-stream"),
        data={"advisor": "ansel"},
    )
    assert response.status_code == 200, response.text
    job_id = response.headers["X-Job-ID"]
    with client.db.read() as conn:
        image_hash = conn.execute("SELECT image_hash FROM jobs WHERE id = ?", (job_id,)).fetchone()[
            0
        ]
        stored = images.require_image(conn, image_hash)
        path = images.image_path(conn, client.images_dir, image_hash)
    assert stored.mime == "image/jpeg"
    assert read_image(path.read_bytes()).exif.camera == camera  # kept in the working copy


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("cut.heic", _heic()[:200], ("HEIC", "truncated")),
        ("cut.dng", bayer_dng(256, 192)[:20_000], ("DNG", "truncated")),
    ],
)
def test_a_broken_photographers_file_is_a_json_422(client, name, data, words):
    response = client.post(
        "/analyze", files=upload(data, name, "application/octet-stream"), data={"advisor": "ansel"}
    )
    assert_error(response, 422, "truncated_image", *words)
