"""Fixtures for the training tests: a Mondrian home whose advisor has a small portfolio
with curated profiles (training_helpers.py builds it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from training_helpers import add_profile

from mondrian.config import Settings
from mondrian.storage import Database


@pytest.fixture
def state(db: Database) -> Database:
    """The training tests' name for the state (tests/conftest.py's `db`)."""
    return db


@pytest.fixture
def portfolio(state: Database, settings: Settings) -> list[str]:
    """Four images with curated profiles; their hashes."""
    return [add_profile(state, settings, i) for i in range(4)]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test: on a shared 2-core machine two threads spin
    against other processes and are several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
