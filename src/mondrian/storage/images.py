"""Images stored by content: the file name is the SHA-256 of the bytes, never a user's name.

Files live at `images_dir/<hash[:2]>/<hash>.<ext>`; the row keeps that path relative to
`images_dir`, so the whole home directory can move. Callers decode and check the image
(size, format, pixel budget) before storing it; this module only files the bytes.
`remove_unreferenced` takes away images that no job, portfolio, profile or review uses
(the service runs it at start, service/worker.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mondrian.errors import InvalidInput, NotFound
from mondrian.staging import write_atomic
from mondrian.storage.db import utcnow

EXTENSIONS: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tif",
    "image/heic": "heic",
    "image/heif": "heif",
}

_HASH = re.compile(r"^[0-9a-f]{64}$")
# The tables whose rows point at an image (storage/migrations.py).
_REFERRERS = ("jobs", "portfolio", "profiles", "reviews")


@dataclass(frozen=True)
class StoredImage:
    hash: str
    path: str  # relative to the images directory, POSIX separators
    mime: str
    width: int
    height: int
    size_bytes: int
    created_at: str


@dataclass(frozen=True)
class PortfolioItem:
    advisor_id: str
    image_hash: str
    title: str | None
    added_at: str
    image: StoredImage


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_hash(image_hash: str) -> str:
    """The hash itself if it is a lowercase SHA-256 hex digest, else `InvalidInput`."""
    if not isinstance(image_hash, str) or not _HASH.match(image_hash):
        raise InvalidInput(f"not an image hash (64 lowercase hex digits): {image_hash!r}")
    return image_hash


def store_image(
    conn: sqlite3.Connection, images_dir: Path, data: bytes, mime: str, width: int, height: int
) -> str:
    """File the bytes under their SHA-256 and record them; return the hash.

    Storing the same bytes again changes nothing (and restores the file if it went
    missing). The file is written to a temporary name and renamed into place, so a
    reader never sees half an image, and the rename happens before the row is written.
    """
    if not data:
        raise InvalidInput("the image is empty")
    ext = EXTENSIONS.get(mime)
    if ext is None:
        raise InvalidInput(f"unsupported image type {mime!r}; expected one of {sorted(EXTENSIONS)}")
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image size must be positive, got {width}x{height}")
    digest = content_hash(data)
    images_dir = Path(images_dir)
    row = conn.execute("SELECT path FROM images WHERE hash = ?", (digest,)).fetchone()
    rel = row["path"] if row is not None else f"{digest[:2]}/{digest}.{ext}"
    target = images_dir / rel
    if not target.is_file() or target.stat().st_size != len(data):
        write_atomic(target, data, mode=0o600)  # an upload is the photographer's, not public
    if row is None:
        conn.execute(
            """
            INSERT INTO images (hash, path, mime, width, height, size_bytes, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (hash) DO NOTHING
            """,
            (digest, rel, mime, width, height, len(data), utcnow()),
        )
    return digest


def _image(row: sqlite3.Row) -> StoredImage:
    return StoredImage(
        hash=row["hash"],
        path=row["path"],
        mime=row["mime"],
        width=row["width"],
        height=row["height"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
    )


def get_image(conn: sqlite3.Connection, image_hash: str) -> StoredImage | None:
    row = conn.execute("SELECT * FROM images WHERE hash = ?", (check_hash(image_hash),)).fetchone()
    return None if row is None else _image(row)


def require_image(conn: sqlite3.Connection, image_hash: str) -> StoredImage:
    image = get_image(conn, image_hash)
    if image is None:
        raise NotFound(f"no stored image {image_hash}")
    return image


def image_path(conn: sqlite3.Connection, images_dir: Path, image_hash: str) -> Path:
    """Where the stored image's file is. `NotFound` if the hash is not stored."""
    image = require_image(conn, image_hash)
    root = Path(images_dir).resolve()
    path = (root / image.path).resolve()
    # The row was written by store_image, but a tampered database must not point outside.
    if not path.is_relative_to(root):
        raise InvalidInput(f"stored path of image {image_hash} leaves the images directory")
    return path


def add_to_portfolio(
    conn: sqlite3.Connection, advisor_id: str, image_hash: str, title: str | None = None
) -> None:
    """Put a stored image in an advisor's portfolio; adding it again updates the title."""
    require_image(conn, image_hash)
    conn.execute(
        """
        INSERT INTO portfolio (advisor_id, image_hash, title, added_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (advisor_id, image_hash) DO UPDATE SET title = excluded.title
        """,
        (advisor_id, image_hash, title, utcnow()),
    )


def remove_from_portfolio(conn: sqlite3.Connection, advisor_id: str, image_hash: str) -> None:
    cur = conn.execute(
        "DELETE FROM portfolio WHERE advisor_id = ? AND image_hash = ?", (advisor_id, image_hash)
    )
    if cur.rowcount == 0:
        raise NotFound(f"image {image_hash} is not in {advisor_id!r}'s portfolio")


def list_portfolio(conn: sqlite3.Connection, advisor_id: str) -> list[PortfolioItem]:
    """An advisor's portfolio in the order it was added, each with its stored image."""
    rows = conn.execute(
        """
        SELECT p.advisor_id, p.image_hash, p.title, p.added_at, i.*
        FROM portfolio p JOIN images i ON i.hash = p.image_hash
        WHERE p.advisor_id = ?
        ORDER BY p.added_at, p.rowid
        """,
        (advisor_id,),
    ).fetchall()
    return [
        PortfolioItem(
            advisor_id=row["advisor_id"],
            image_hash=row["image_hash"],
            title=row["title"],
            added_at=row["added_at"],
            image=_image(row),
        )
        for row in rows
    ]


def remove_unreferenced(
    conn: sqlite3.Connection, images_dir: Path, *, grace: timedelta = timedelta(hours=1)
) -> list[str]:
    """Delete images no table refers to, their rows and files, and stray files with no
    row (a write that was rolled back); return the hashes of the rows removed.

    Run inside `Database.write`: the writer's lock keeps any `store_image` out meanwhile.
    Only what is older than `grace` goes, so an image stored a moment ago by a command
    that has yet to write the job pointing at it (`mondrian analyze`) is left alone."""
    cutoff = datetime.now(UTC) - grace
    unused = " AND ".join(f"hash NOT IN (SELECT image_hash FROM {t})" for t in _REFERRERS)
    rows = conn.execute(
        f"SELECT hash, path FROM images WHERE {unused} AND created_at < ?",
        (cutoff.isoformat(timespec="microseconds").replace("+00:00", "Z"),),  # as utcnow()
    ).fetchall()
    root = Path(images_dir)
    for row in rows:
        conn.execute("DELETE FROM images WHERE hash = ?", (row["hash"],))
        with contextlib.suppress(FileNotFoundError):
            (root / row["path"]).unlink()
    known = {row["path"] for row in conn.execute("SELECT path FROM images")}
    for path in root.glob("*/*"):
        old = datetime.fromtimestamp(path.stat().st_mtime, UTC) < cutoff
        if old and path.is_file() and path.relative_to(root).as_posix() not in known:
            path.unlink()
    return [row["hash"] for row in rows]


def forget_if_unreferenced(conn: sqlite3.Connection, images_dir: Path, image_hash: str) -> bool:
    """Delete one stored image, row and file, if no table refers to it (a deleted job's
    photo); True when it went. Unlike `remove_unreferenced` there is no grace period: the
    caller has just removed the last reference it knows of, inside this same write."""
    unused = " AND ".join(
        f"NOT EXISTS (SELECT 1 FROM {t} WHERE image_hash = ?)" for t in _REFERRERS
    )
    row = conn.execute(
        f"SELECT path FROM images WHERE hash = ? AND {unused}",
        (check_hash(image_hash), *[image_hash] * len(_REFERRERS)),
    ).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM images WHERE hash = ?", (image_hash,))
    # Inside the write transaction, as remove_unreferenced: no store_image runs meanwhile.
    root = Path(images_dir).resolve()
    path = (root / row["path"]).resolve()
    if path.is_relative_to(root):  # a tampered row must not delete a file elsewhere
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return True
