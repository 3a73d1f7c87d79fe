"""Output folders that appear complete or not at all.

Every folder Mondrian writes for others to read (adapter versions, datasets, merges, MLX
exports, converted checkpoints) is built in a staging folder beside its target, on the
same file system, and renamed into place once finished: a reader, or a run killed half
way, never sees a half-written one. `staged_output()` is that pattern for a target path;
`staging_area()` is its first half, for writers whose rename happens elsewhere (an adapter
version is renamed inside the registry's transaction, training/registry.py).
`write_atomic()` is the same pattern for one file (reports, stored images, exports, JSON
records).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def staging_area(parent: Path, prefix: str) -> Iterator[Path]:
    """A new private (0700) folder under `parent`, removed on exit unless the body renamed
    it away: a failure, or an interrupt, leaves nothing behind."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged_output(out_dir: Path) -> Iterator[Path]:
    """Yield a staging folder beside `out_dir`; when the body finishes, give it readable
    modes and rename it to `out_dir` (an old `out_dir` is swapped out, and put back if the
    rename fails). When the body raises, the staging folder is removed and `out_dir` is
    left as it was."""
    out_dir = Path(out_dir)
    with staging_area(out_dir.parent, f".{out_dir.name}.partial-") as staging:
        yield staging
        install_dir(staging, out_dir)


def install_dir(staging: Path, out_dir: Path) -> None:
    """Move a finished staging folder to `out_dir`, swapping out an old one."""
    make_readable(staging)
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


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file beside it and a rename: a reader sees
    the old file or the whole new one, and a crash leaves no half file under `path`'s name.

    `mode`: the finished file's permissions (`mkstemp` makes it 0600; most of what Mondrian
    writes is meant to be read by others, a stored upload is not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, str):
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def default_modes(probe_dir: Path) -> tuple[int, int]:
    """(file mode, folder mode) that a plain `open`/`mkdir` gives under this umask.

    A probe file reads the umask without `os.umask`'s process-wide side effect (another
    thread could create a file while the umask is changed)."""
    probe = Path(tempfile.mkdtemp(prefix=".mode-probe-", dir=probe_dir))
    try:
        fd = os.open(probe / "f", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        file_mode = (probe / "f").stat().st_mode & 0o777
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return file_mode, file_mode | ((file_mode & 0o444) >> 2)  # folders: x wherever r


def make_readable(root: Path) -> None:
    """Give a finished output the modes a plain write would have (0644 files, 0755
    folders under the usual umask 022).

    Outputs are shared data: a server running as another user (vLLM in its container)
    must read them. `mkdtemp` makes the staging folder 0700, and some writers leave
    files 0600 (a `mkstemp` then rename). Links are left alone, symbolic or hard (an
    export's `base/` shares the base checkpoint's files): their modes are their source's.
    """
    root = Path(root)
    file_mode, dir_mode = default_modes(root.parent)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink() and path.stat().st_nlink == 1:
                path.chmod(file_mode)
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(dir_mode)
    root.chmod(dir_mode)
