"""Keeping transformers' own progress bars ("Loading weights", "Writing model shards")
off the terminal while ours is the one to watch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Disable transformers' progress bars inside the block; restore the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
