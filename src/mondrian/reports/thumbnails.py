"""Photos inside a report: bounded JPEG thumbnails as data URIs.

A report is one file that loads nothing (reports/render.py), so the photo it critiques and
the portfolio exemplars RAG retrieved go in as `data:image/jpeg;base64,...`. Each is shrunk
to `THUMB_SIDE` pixels on its long side and re-encoded, so a 24-megapixel original adds
tens of kilobytes to the page, not megabytes.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from mondrian.errors import MondrianError
from mondrian.storage import images as image_store
from mondrian.storage.db import Database

log = logging.getLogger(__name__)

THUMB_SIDE = 640  # the photo on the page; exemplars are shown smaller from the same size
EXEMPLAR_SIDE = 160
JPEG_QUALITY = 82


@dataclass(frozen=True)
class ReportImages:
    """The pictures a critique page shows: its photo, and exemplars by image hash."""

    photo: str | None = None
    exemplars: dict[str, str] = field(default_factory=dict)


def thumbnail_jpeg(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """The image in `data` as a JPEG at most `side` pixels on its long side."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))  # a JPEG decodes at a fraction of its size: fast
        image = ImageOps.exif_transpose(image)  # as the camera held it
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def thumbnail_uri(data: bytes, side: int = THUMB_SIDE) -> str:
    """A JPEG data URI of the image in `data`, at most `side` pixels on its long side."""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(data, side)).decode("ascii")


def _stored_uri(db: Database, images_dir: Path, image_hash: str, side: int) -> str | None:
    # A missing or unreadable stored image leaves the picture out; the report still renders.
    try:
        with db.read() as conn:
            path = image_store.image_path(conn, images_dir, image_hash)
        return thumbnail_uri(path.read_bytes(), side)
    except (MondrianError, OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("image %s left out of the report: %s", image_hash[:12], exc)
        return None


def report_images(
    db: Database,
    images_dir: Path,
    *,
    photo: bytes | None = None,
    photo_hash: str | None = None,
    exemplar_hashes: Iterable[str] = (),
) -> ReportImages:
    """The report's pictures: the photo from its bytes, or from the stored images under
    MONDRIAN_HOME/images by its hash; the exemplars from the stored images by theirs."""
    if photo is not None:
        photo_uri: str | None = thumbnail_uri(photo, THUMB_SIDE)
    elif photo_hash is not None:
        photo_uri = _stored_uri(db, images_dir, photo_hash, THUMB_SIDE)
    else:
        photo_uri = None
    exemplars = {}
    for image_hash in exemplar_hashes:
        uri = _stored_uri(db, images_dir, image_hash, EXEMPLAR_SIDE)
        if uri is not None:
            exemplars[image_hash] = uri
    return ReportImages(photo=photo_uri, exemplars=exemplars)
