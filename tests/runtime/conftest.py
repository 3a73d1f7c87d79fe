"""Tiny checkpoints, built once per test session (a build takes well under a second once
torch and transformers are imported)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mondrian.runtime.tiny import ARCHES, DEFAULT_ARCH


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
