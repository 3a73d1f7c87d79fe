"""Output folders that appear complete or not at all: built in a staging folder beside the
target (same file system) and renamed into place."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mondrian.errors import InvalidInput


def prepare_out_dir(out_dir: Path, force: bool, marker: str, what: str) -> Path:
    """Check that `out_dir` may be written; return it absolute.

    An existing non-empty folder is replaced only with `force`, and only if it holds
    `marker` (a file this kind of output always has): never an arbitrary folder.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise InvalidInput(f"{out_dir} exists and is not empty (use --force to replace it)")
        if not (out_dir / marker).is_file():
            raise InvalidInput(f"{out_dir} is not {what} (no {marker}); refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir


def staging_dir(out_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))


def install_dir(staging: Path, out_dir: Path) -> None:
    """Move a finished staging folder to `out_dir`, swapping out an old one."""
    staging.chmod(0o755)  # mkdtemp makes it 0700; outputs are shared data
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = staging.with_name(staging.name.replace(".partial-", ".old-"))
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)
