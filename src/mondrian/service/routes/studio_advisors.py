"""Advisor portraits for the studio's advisor cards, and the operator pages' style sheet.

- `GET /studio/advisors/{id}/portrait`: a square JPEG thumbnail of the advisor's
  representative portfolio photo: of the portfolio photos the advisor has profiled, the
  one it scores highest (its own taste), the earliest added on a tie; the first photo added
  when none is profiled. Without a portfolio, an SVG of the advisor's initials. The request
  names an advisor id (checked against the id pattern), never a path: the file is the one
  the image store keeps under its content hash.
- `GET /studio/static/ops.css`: the review and operator pages' styles.

`templates/studio/_advisor_portrait.html` is the card's include (an `<img>` of this route).
"""

from __future__ import annotations

import io
import sqlite3
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from markupsafe import escape
from PIL import Image, ImageOps

from mondrian.advisors import Advisor
from mondrian.errors import MondrianError
from mondrian.service.deps import State, load_advisor
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.storage.db import Database

router = APIRouter(include_in_schema=False)

PORTRAIT_SIDE = 160  # twice the card's 80 px, for high-density screens
JPEG_QUALITY = 82
STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "studio"
# Portfolios change only by `mondrian index`: a few minutes of caching is safe.
CACHE = "private, max-age=300"


def representative_hash(conn: sqlite3.Connection, advisor: Advisor) -> str | None:
    """The portfolio photo that stands for the advisor (see the module's docstring)."""
    portfolio = image_store.list_portfolio(conn, advisor.id)
    if not portfolio:
        return None
    order = {item.image_hash: i for i, item in enumerate(portfolio)}
    scored = [
        (
            p.critique.scored(advisor.weights).overall_score or 0.0,
            -order[p.image_hash],
            p.image_hash,
        )
        for p in profile_store.list_profiles(conn, advisor.id)
        if p.image_hash in order
    ]
    return max(scored)[2] if scored else portfolio[0].image_hash


@lru_cache(maxsize=64)
def square_jpeg(path: Path, size_bytes: int) -> bytes:
    """The photo cropped to its centre square at PORTRAIT_SIDE (`size_bytes` keys the cache
    to the file: a hash names one content, but the file may be replaced by a restore)."""
    with Image.open(path) as image:
        image.draft("RGB", (PORTRAIT_SIDE * 2, PORTRAIT_SIDE * 2))  # JPEG: decode small
        image = ImageOps.exif_transpose(image)
        square = ImageOps.fit(image.convert("RGB"), (PORTRAIT_SIDE, PORTRAIT_SIDE))
    out = io.BytesIO()
    square.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def initials_svg(advisor: Advisor) -> bytes:
    initials = "".join(word[0] for word in advisor.name.split()[:2]).upper() or "?"
    side = PORTRAIT_SIDE
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" '
        f'width="{side}" height="{side}"><rect width="{side}" height="{side}" fill="#0b4ea2"/>'
        f'<text x="50%" y="54%" fill="#fff" font-family="sans-serif" font-size="64" '
        f'font-weight="700" text-anchor="middle" dominant-baseline="middle">'
        f"{escape(initials)}</text></svg>"
    ).encode()


def portrait(db: Database, advisor: Advisor, images_dir: Path) -> tuple[bytes, str]:
    """(bytes, media type) of the advisor's portrait."""
    with db.read() as conn:
        image_hash = representative_hash(conn, advisor)
        path = None
        if image_hash is not None:
            path = image_store.image_path(conn, images_dir, image_hash)
    if path is not None:
        try:
            return square_jpeg(path, path.stat().st_size), "image/jpeg"
        except (OSError, ValueError, Image.DecompressionBombError):
            pass  # a missing or unreadable file: the initials, not a broken image
    return initials_svg(advisor), "image/svg+xml"


@router.get("/studio/advisors/{advisor_id}/portrait")
async def advisor_portrait(advisor_id: str, state: State) -> Response:
    advisor = await run_in_threadpool(load_advisor, state.db, advisor_id)
    try:
        data, media_type = await run_in_threadpool(
            portrait, state.db, advisor, state.settings.images_dir
        )
    except MondrianError:
        data, media_type = initials_svg(advisor), "image/svg+xml"
    return Response(data, media_type=media_type, headers={"Cache-Control": CACHE})


@router.get("/studio/static/ops.css")
def ops_css() -> FileResponse:
    return FileResponse(STATIC_DIR / "ops.css", media_type="text/css")
