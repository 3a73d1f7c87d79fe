"""Every test gets its own MONDRIAN_HOME and runs offline; tiny checkpoints of the real
architectures are built once per session and shared (treat them as read-only)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mondrian.runtime.tiny import ARCHES, DEFAULT_ARCH

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


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(tmp_path_factory) -> Callable[..., Path]:
    """`factory(arch="qwen2_5_vl", seed=0) -> Path`: the checkpoint, built on first use.

    Treat the directory as read-only: other tests share it.
    """
    built: dict[tuple[str, int], Path] = {}

    def factory(arch: str = DEFAULT_ARCH, seed: int = 0) -> Path:
        if (arch, seed) not in built:
            from mondrian.runtime.tiny import make_tiny

            parent = tmp_path_factory.mktemp(f"tiny-{arch}-{seed}")
            built[arch, seed] = make_tiny(parent / "checkpoint", arch, seed)
        return built[arch, seed]

    return factory


@pytest.fixture(params=ARCHES)
def tiny_checkpoint(request, tiny_checkpoint_factory) -> Path:
    """Each architecture's seed-0 checkpoint in turn (the test runs once per arch)."""
    return tiny_checkpoint_factory(request.param)
