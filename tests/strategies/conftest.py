"""Fixtures for the strategy tests: the asset photos, one tiny model shared by the session
(its first generation compiles the grammar; later ones take about half a second), and the
state under the test's own MONDRIAN_HOME."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mondrian.config import load_settings
from mondrian.storage.bootstrap import open_state
from mondrian.storage.db import Database

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return PHOTOS


@pytest.fixture
def photo_copies(tmp_path) -> Callable:
    """`copies(*names) -> folder` holding copies of the named asset photos."""

    def copies(*names: str) -> Path:
        folder = tmp_path / "photos"
        folder.mkdir(exist_ok=True)
        for name in names:
            shutil.copy(PHOTOS / f"{name}.jpg", folder / f"{name}.jpg")
        return folder

    return copies


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from mondrian.runtime.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "checkpoint", "qwen2_5_vl", 0)


@pytest.fixture(scope="session")
def backend(tiny_model):
    from mondrian.runtime.transformers_backend import TransformersBackend

    # Short strings and lists keep a constrained answer near 300 tokens.
    return TransformersBackend(str(tiny_model), max_text_chars=24, max_list_items=2)


@pytest.fixture
def settings(mondrian_home):
    return load_settings()


@pytest.fixture
def db(settings) -> Iterator[Database]:
    database = open_state(settings)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def ctx(backend, db, settings):
    from mondrian.strategies.base import Context

    return Context(backend=backend, db=db, settings=settings)


@pytest.fixture
def ansel(db):
    from mondrian.storage import advisors

    with db.read() as conn:
        return advisors.require_advisor(conn, "ansel")
