"""Fixtures for the storage tests: an open Database in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mondrian.storage import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with Database(tmp_path / "home" / "mondrian.db") as database:
        yield database


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "images"
