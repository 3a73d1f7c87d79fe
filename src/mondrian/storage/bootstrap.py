"""Opening Mondrian's state: the database (the SQLite file under MONDRIAN_HOME, or the
PostgreSQL that MONDRIAN_DATABASE_URL names) with the shipped advisors in it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mondrian.advisors import Advisor, shipped_advisors
from mondrian.config import Settings
from mondrian.errors import InvalidInput, MondrianError
from mondrian.storage.advisors import upsert_advisor
from mondrian.storage.db import Database
from mondrian.storage.dialect import is_postgres_url, redact_url
from mondrian.storage.postgres import PostgresDatabase

StateDatabase = Database | PostgresDatabase


def _seed(conn: sqlite3.Connection, advisors: list[Advisor]) -> int:
    """Insert or refresh the shipped advisors whose stored copy differs; returns how many."""
    changed = 0
    for advisor in advisors:
        row = conn.execute("SELECT data FROM advisors WHERE id = ?", (advisor.id,)).fetchone()
        if row is None or Advisor.model_validate_json(row["data"]) != advisor:
            upsert_advisor(conn, advisor, builtin=True)
            changed += 1
    return changed


def database_url(settings: Settings) -> str | None:
    """MONDRIAN_DATABASE_URL, checked to be a PostgreSQL URL; None for the SQLite file."""
    if settings.database_url is None:
        return None
    url = settings.database_url.get_secret_value().strip()
    if not is_postgres_url(url):
        raise InvalidInput(
            f"MONDRIAN_DATABASE_URL must be a postgresql:// URL, got {redact_url(url)!r} "
            "(unset it to use the SQLite file under MONDRIAN_HOME)",
            code="bad_database_url",
        )
    return url


def database_for(settings: Settings) -> StateDatabase:
    """The state's database, not yet open: PostgreSQL when MONDRIAN_DATABASE_URL is set."""
    url = database_url(settings)
    return Database.for_settings(settings) if url is None else PostgresDatabase(url)


def open_state(settings: Settings) -> StateDatabase:
    """The open database, migrated, with the shipped advisors up to date."""
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    return _open_seeded(database_for(settings))


def _open_seeded(db: StateDatabase) -> StateDatabase:
    db.open()
    advisors = shipped_advisors()
    with db.read() as conn:
        stale = any(
            conn.execute(
                "SELECT 1 FROM advisors WHERE id = ? AND data = ?", (a.id, a.model_dump_json())
            ).fetchone()
            is None
            for a in advisors
        )
    if stale:
        db.write(_seed, advisors)
    return db


def open_existing_state(settings: Settings) -> StateDatabase | None:
    """The open database if Mondrian has state under MONDRIAN_HOME, else None.

    For read-only commands (`mondrian adapters list`): they must not create the home
    folder or an empty database just to report that there is nothing in it."""
    if database_url(settings) is None and not settings.db_path.is_file():
        return None
    return open_state(settings)


@contextlib.contextmanager
def read_only_state(settings: Settings) -> Iterator[StateDatabase]:
    """The state a command that only reads sees: the real database when there is one, else
    a throwaway one in a temporary folder holding just the shipped advisors, so listing or
    showing on a fresh machine writes nothing under MONDRIAN_HOME."""
    existing = open_existing_state(settings)
    if existing is not None:
        with existing:
            yield existing
        return
    with (
        tempfile.TemporaryDirectory(prefix="mondrian-no-state-") as folder,
        _open_seeded(Database(Path(folder) / "mondrian.db")) as db,
    ):
        yield db


SERVE_LOCK = "serve.lock"


class HomeInUse(MondrianError):
    code = "home_in_use"
    http_status = 503


@contextlib.contextmanager
def serving_home(settings: Settings) -> Iterator[Path]:
    """Hold MONDRIAN_HOME for one serving process, for as long as the block runs.

    A service's start-up recovery re-queues every job left `running`: it cannot tell one
    orphaned by a crash from one a live server is running. So a second server on the same
    home must not start at all; it fails here with HomeInUse naming the first one's pid.
    The lock is `flock` on `serve.lock`: the kernel drops it when its holder dies, kill -9
    included, so a crash never leaves the home locked."""
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    path = home / SERVE_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise HomeInUse(
                f"{home} is already served by another mondrian serve (pid {holder}); "
                "stop it first, or give this one its own MONDRIAN_HOME"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
