"""Fixtures for the service tests: the tiny model and a backend shared by the session
(apps are built once per module; one app uses the backend at a time)."""

from __future__ import annotations

import pytest
from service_helpers import tiny_backend_for, tiny_settings


@pytest.fixture(scope="session")
def tiny_backend(tiny_model, tmp_path_factory):
    """For the modules that load no adapter (adapters stay resident in a backend)."""
    return tiny_backend_for(tiny_settings(tmp_path_factory.mktemp("unused-home"), tiny_model))
