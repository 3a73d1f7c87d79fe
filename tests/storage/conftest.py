"""Fixtures for the storage tests: an open database, SQLite in a temporary directory or a
fresh database on the session's PostgreSQL (tests/pg_server.py). Tests that take `db` run
on both (`[sqlite]`, `[postgres]`); PostgreSQL's are skipped with the reason where it is
not installed (failed under CI=true)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mondrian.storage import Database
from mondrian.storage.postgres import PostgresDatabase


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None for SQLite; the URL of an empty PostgreSQL database otherwise."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_server").fresh_database()


@pytest.fixture
def db(db_url: str | None, tmp_path: Path) -> Iterator[Database | PostgresDatabase]:
    database = Database(tmp_path / "home" / "mondrian.db") if db_url is None else None
    with database or PostgresDatabase(db_url) as opened:  # type: ignore[arg-type]
        yield opened


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """SQLite only: for what is SQLite's own (pragmas, the writer thread, the read pool)."""
    with Database(tmp_path / "home" / "mondrian.db") as database:
        yield database


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "images"
