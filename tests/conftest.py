"""Every test gets its own MONDRIAN_HOME and runs offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def mondrian_home(tmp_path, monkeypatch):
    home = tmp_path / "mondrian-home"
    monkeypatch.setenv("MONDRIAN_HOME", str(home))
    for name in ("MONDRIAN_MODEL", "MONDRIAN_BACKEND", "MONDRIAN_ANALYSIS_MODE", "ANALYSIS_MODE"):
        monkeypatch.delenv(name, raising=False)
    return home
