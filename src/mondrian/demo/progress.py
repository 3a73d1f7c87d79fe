"""The demo's progress bars for indexing and evaluation, as training shows its own.

tqdm on stderr, so the demo's numbered steps on stdout stay readable when piped; off with
`--no-progress`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(total: int, desc: str, unit: str, enabled: bool) -> Iterator[Any]:
    """A bar of `total` steps; `enabled` False draws nothing (its `update` still works)."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=f"    {desc}",
        unit=unit,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )
    try:
        yield bar
    finally:
        bar.close()


class EvalBars:
    """One bar per evaluated variant (base, adapter, ...), fed by `evaluate`'s on_progress."""

    def __init__(self, split: str, enabled: bool) -> None:
        self.split, self.enabled = split, enabled
        self.bars: dict[str, Any] = {}
        self.seen: dict[str, int] = {}  # variant -> examples done, what a test reads

    def __enter__(self) -> EvalBars:
        return self

    def update(self, variant: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(variant)
        if bar is None:
            bar = self.bars[variant] = tqdm(
                total=total,
                desc=f"    {self.split}: {variant}",
                unit="ex",
                file=sys.stderr,
                disable=not self.enabled,
                leave=False,
            )
        bar.update(done - bar.n)
        self.seen[variant] = done

    def __exit__(self, *_: object) -> None:
        for bar in self.bars.values():
            bar.close()
