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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from mondrian.errors import MondrianError
from mondrian.reports.clipping import MASK_SIDE, clipping_mask_uri
from mondrian.storage import images as image_store
from mondrian.storage.db import Database

log = logging.getLogger(__name__)

THUMB_SIDE = 640  # the photo on the page; exemplars are shown smaller from the same size
EXEMPLAR_SIDE = 160
JPEG_QUALITY = 82


@dataclass(frozen=True)
class ReportImages:
    """The pictures a critique page shows: its photo, and exemplars by image hash;
    `clipping`, the photo with its clipped pixels marked (reports/clipping.py), which a page
    shows only where the facts say enough is clipped."""

    photo: str | None = None
    exemplars: dict[str, str] = field(default_factory=dict)
    clipping: str | None = None


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


def _stored_bytes(db: Database, images_dir: Path, image_hash: str) -> bytes | None:
    try:
        with db.read() as conn:
            path = image_store.image_path(conn, images_dir, image_hash)
        return path.read_bytes()
    except (MondrianError, OSError) as exc:
        log.warning("image %s left out of the report: %s", image_hash[:12], exc)
        return None


def _drawn(draw: Callable[[bytes, int], str], data: bytes | None, side: int) -> str | None:
    # An unreadable stored image leaves its picture out; the report still renders.
    if data is None:
        return None
    try:
        return draw(data, side)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("a picture left out of the report: %s", exc)
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
        # The caller's photo, already read as one: an error in it is the caller's.
        photo_uri: str | None = thumbnail_uri(photo, THUMB_SIDE)
    elif photo_hash is not None:
        photo = _stored_bytes(db, images_dir, photo_hash)
        photo_uri = _drawn(thumbnail_uri, photo, THUMB_SIDE)
    else:
        photo_uri = None
    exemplars = {}
    for image_hash in exemplar_hashes:
        uri = _drawn(thumbnail_uri, _stored_bytes(db, images_dir, image_hash), EXEMPLAR_SIDE)
        if uri is not None:
            exemplars[image_hash] = uri
    clipping = _drawn(clipping_mask_uri, photo, MASK_SIDE) if photo_uri else None
    return ReportImages(photo=photo_uri, exemplars=exemplars, clipping=clipping)
