"""The line a user reads while a model loads: what, how big, and how long it took.

A real Qwen-VL model takes from half a minute to two to load, before the first token; without
a word the command looks hung. `announce_load` wraps a backend's construction in
`create_backend` (backends/protocol.py), so every command and the service say it alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _hub_cache() -> Path:
    # The cache huggingface_hub uses, found as it finds it, without importing it here.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def _folder_bytes(folder: Path) -> int:
    # Files once each: a hub snapshot's files are links into blobs/.
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def model_bytes(model: str) -> int | None:
    """Bytes of the model on disk: a local folder, or the hub cache's copy; None when not
    found (a hub id not downloaded yet)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return _folder_bytes(local)
    blobs = _hub_cache() / ("models--" + model.replace("/", "--")) / "blobs"
    return _folder_bytes(blobs) if blobs.is_dir() else None


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


@contextmanager
def announce_load(model: str) -> Iterator[None]:
    """`loading model NAME (SIZE on disk) ...` on stderr, then the seconds it took."""
    size = model_bytes(model)
    if size is not None:
        shown = f"{human_bytes(size)} on disk"
    elif model.startswith(("/", "./", "../", "~")):
        shown = "no such folder"  # a path, not a hub id: the load will say so too
    else:
        shown = "not in the local cache"
    print(f"mondrian: loading model {model} ({shown}) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    print(f"mondrian: model loaded in {elapsed:.1f} s", file=sys.stderr, flush=True)
