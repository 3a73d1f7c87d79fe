"""Indexing a portfolio: store each image, profile it with the model, embed it.

Resumable by construction: an image is written (image file, portfolio row, profile and
embedding) in one transaction once its profile exists, and an image whose profile is
already stored for the advisor is skipped before any model work. Interrupting a run
therefore loses at most the batch in flight, and running it again finishes the rest
without duplicates. Unreadable files are reported and skipped; they never stop a run.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mondrian.advisors import Advisor
from mondrian.backends.protocol import GenerationRequest
from mondrian.context import Context
from mondrian.errors import MondrianError
from mondrian.images import IMAGE_SUFFIXES, Photo, read_image_file
from mondrian.portfolio.retrieval import encode_embedding
from mondrian.prompts import profile_prompt
from mondrian.schema import Critique
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.storage.db import Database

INDEXED, SKIPPED, UNREADABLE, FAILED = "indexed", "skipped", "unreadable", "failed"
DEFAULT_BATCH_SIZE = 4


@dataclass(frozen=True)
class IndexEvent:
    """One file done: `status` is indexed, skipped (already indexed), unreadable or failed
    (read fine, but the model gave no valid profile)."""

    path: Path
    status: str
    done: int
    total: int
    image_hash: str | None = None
    message: str | None = None


ProgressCallback = Callable[[IndexEvent], None]


@dataclass
class IndexReport:
    indexed: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.indexed) + len(self.skipped) + len(self.unreadable) + len(self.failed)

    @property
    def readable(self) -> int:
        return len(self.indexed) + len(self.skipped) + len(self.failed)


def collect_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files named, and image files (by suffix) anywhere under folders named, in a stable
    order. A path that does not exist is kept, so that it is reported as unreadable."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def pending_files(db: Database, advisor_id: str, files: Sequence[Path]) -> list[Path]:
    """The files whose bytes are not yet profiled for the advisor (unreadable ones count
    as pending). Hashing only, no decoding: lets a caller skip loading a model at all."""
    pending = []
    with db.read() as conn:
        for path in files:
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                pending.append(path)
                continue
            if not profile_store.has_profile(conn, advisor_id, digest):
                pending.append(path)
    return pending


def index_paths(
    ctx: Context,
    advisor: Advisor,
    paths: Iterable[Path | str],
    on_progress: ProgressCallback | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> IndexReport:
    """Add the images under `paths` to the advisor's portfolio, profiled and embedded.

    `on_progress` is called after each file; an exception it raises stops the run
    (everything reported done before it is stored).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    files = collect_files(paths)
    report = IndexReport()
    total = len(files)
    batch: list[tuple[Path, Photo]] = []
    queued: set[str] = set()

    def emit(path: Path, status: str, image_hash: str | None = None, message: str | None = None):
        if on_progress is not None:
            event = IndexEvent(path, status, report.total, total, image_hash, message)
            on_progress(event)

    for path in files:
        try:
            photo = read_image_file(
                path,
                max_bytes=ctx.settings.max_file_bytes,
                max_pixels=ctx.settings.max_image_pixels,
            )
        except MondrianError as exc:
            report.unreadable.append((path, exc.message))
            emit(path, UNREADABLE, message=exc.message)
            continue
        with ctx.db.read() as conn:
            done = profile_store.has_profile(conn, advisor.id, photo.sha256)
        if done or photo.sha256 in queued:
            report.skipped.append(path)
            emit(path, SKIPPED, photo.sha256)
            continue
        batch.append((path, photo))
        queued.add(photo.sha256)
        if len(batch) >= batch_size:
            _index_batch(ctx, advisor, batch, report, emit)
            batch = []
    if batch:
        _index_batch(ctx, advisor, batch, report, emit)
    return report


def _index_batch(
    ctx: Context,
    advisor: Advisor,
    batch: list[tuple[Path, Photo]],
    report: IndexReport,
    emit: Callable[..., None],
) -> None:
    requests = [GenerationRequest(prompt=profile_prompt(photo.image)) for _, photo in batch]
    generations = ctx.backend.generate(requests)
    embeddings = _embeddings(ctx, [photo for _, photo in batch])
    for (path, photo), generation, embedding in zip(batch, generations, embeddings, strict=True):
        if generation.critique is None:
            message = f"the model gave no valid profile: {generation.error}"
            report.failed.append((path, message))
            emit(path, FAILED, photo.sha256, message)
            continue
        ctx.db.write(
            _store,
            ctx.settings.images_dir,
            advisor.id,
            photo,
            path.stem,
            generation.critique,
            ctx.backend.model_id,
            embedding,
        )
        report.indexed.append(path)
        emit(path, INDEXED, photo.sha256)


def _embeddings(ctx: Context, photos: list[Photo]) -> list[bytes | None]:
    """Embeddings where the backend makes them; profiles alone otherwise."""
    try:
        vectors = ctx.backend.embed_images([photo.image for photo in photos])
    except (NotImplementedError, MondrianError):
        return [None] * len(photos)
    return [encode_embedding(v) for v in vectors]


def _store(
    conn: sqlite3.Connection,
    images_dir: Path,
    advisor_id: str,
    photo: Photo,
    title: str,
    critique: Critique,
    model_id: str,
    embedding: bytes | None,
) -> None:
    """Image, portfolio row and profile together: all of them or none."""
    digest = image_store.store_image(
        conn, images_dir, photo.data, photo.mime, photo.width, photo.height
    )
    if (
        conn.execute(
            "SELECT 1 FROM portfolio WHERE advisor_id = ? AND image_hash = ?", (advisor_id, digest)
        ).fetchone()
        is None
    ):
        # Keep a title a person may have set; name new entries after their file.
        image_store.add_to_portfolio(conn, advisor_id, digest, title)
    profile_store.upsert_profile(conn, advisor_id, digest, critique, "model", model_id, embedding)
