"""Output folders that appear complete or not at all.

Every folder Mondrian writes for others to read (adapter versions, datasets, merges, MLX
exports, converted checkpoints) is built in a staging folder beside its target, on the
same file system, and renamed into place once finished: a reader, or a run killed half
way, never sees a half-written one. `staged_output()` is that pattern for a target path;
`staging_area()` is its first half, for writers whose rename happens elsewhere (an adapter
version is renamed inside the registry's transaction, training/registry.py).
`write_atomic()` is the same pattern for one file (reports, stored images, exports, JSON
records).

A process killed while it stages (kill -9, power loss) cannot clean up after itself, so
each staging folder has a lock file beside it (`<folder>.lock`, held with `flock` while
the folder is in use): `sweep_stale()` removes the folders whose lock nobody holds. It
runs whenever a new staging folder is made beside others, and at the service's start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
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


LOCK_SUFFIX = ".lock"
# A staging folder with no lock file was made by a version of Mondrian before the locks,
# or by a caller that makes its own (training/registry.py's `new_staging_dir`): it is
# removed only once it is this old, so a folder being written now is never taken.
UNLOCKED_STALE_S = 3600.0


@contextlib.contextmanager
def staging_area(parent: Path, prefix: str) -> Iterator[Path]:
    """A new private (0700) folder under `parent`, removed on exit unless the body renamed
    it away: a failure, or an interrupt, leaves nothing behind. Stale folders of the same
    prefix that a killed process left in `parent` are removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent, prefix)
    # The lock first, then the folder named after it: a sweep never sees the folder
    # without its held lock.
    fd, lock_name = tempfile.mkstemp(prefix=prefix, suffix=LOCK_SUFFIX, dir=parent)
    lock = Path(lock_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        staging = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
        staging.mkdir(mode=0o700)
        try:
            yield staging
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove the staging folders `prefix*` in `parent` (and their `.old-` swaps) that no
    live process holds; returns what was removed."""
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for path in sorted(parent.iterdir()):
        name = path.name
        if name.endswith(LOCK_SUFFIX) or not path.is_dir():
            continue
        if not (name.startswith(prefix) or name.startswith(prefix.replace(".partial-", ".old-"))):
            continue
        owner = path.with_name(name.replace(".old-", ".partial-") + LOCK_SUFFIX)
        if _abandoned(path, owner):
            shutil.rmtree(path, ignore_errors=True)
            owner.unlink(missing_ok=True)
            removed.append(path)
    for lock in parent.glob(f"{prefix}*{LOCK_SUFFIX}"):
        # A lock whose folder is gone (killed between the two): remove it if free.
        if not lock.with_name(lock.name.removesuffix(LOCK_SUFFIX)).exists():
            _remove_if_free(lock)
    return removed


def _abandoned(folder: Path, lock: Path) -> bool:
    if not lock.exists():
        with contextlib.suppress(FileNotFoundError):
            return time.time() - folder.stat().st_mtime > UNLOCKED_STALE_S
        return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False  # its owner just finished: it removes the folder itself
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # held: a live process is writing it
    finally:
        os.close(fd)  # closing releases a lock we took
    return True


def _remove_if_free(lock: Path) -> None:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def sweep_adapter_staging(adapters_dir: Path, prefix: str) -> list[Path]:
    """`sweep_stale` in every advisor's folder under `adapters_dir` (the service's start)."""
    removed: list[Path] = []
    if Path(adapters_dir).is_dir():
        for folder in sorted(Path(adapters_dir).iterdir()):
            if folder.is_dir():
                removed += sweep_stale(folder, prefix)
    return removed


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
