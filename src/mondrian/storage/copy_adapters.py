"""`mondrian db copy`'s adapter versions: each version's folder moved into the shared folder.

The registry (training/registry.py) keeps a version at `adapters_dir/<advisor>/v<N>/` and
its row holds that absolute path. Replicas read `MONDRIAN_SHARED_DIR/adapters/`
(config.py's `adapters_dir`), so with `--shared-dir` every version is copied there,
staged beside its target and renamed into place (staging.py), checked with
adapter_format's `verify_dir` and by every file's SHA-256 on both sides, and the copied
rows name the new folder. Nothing is copied until every version has been checked, and an
existing folder is never overwritten: one with the same files (a copy run before, whose
database step failed) is kept, one with other files stops the copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mondrian import adapter_format
from mondrian.errors import InvalidInput, MondrianError
from mondrian.staging import fsync_dir, make_readable, staging_area
from mondrian.storage.adapters import adapter_ref, parse_adapter_ref
from mondrian.storage.db import Database

# training/registry.py's STAGING_PREFIX (that module sits above storage): the service's
# start sweeps a stage a killed copy left (service/app.py, staging.sweep_adapter_staging).
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class AdapterCopy:
    advisor_id: str
    version: int
    source: Path
    target: Path  # the path the copied row holds
    files: int
    action: str  # "copied", "present" (same files already there), "in place" (same folder)

    @property
    def ref(self) -> str:
        return adapter_ref(self.advisor_id, self.version)


@dataclass(frozen=True)
class Registered:
    advisor_id: str
    version: int
    path: Path

    @property
    def ref(self) -> str:
        return adapter_ref(self.advisor_id, self.version)


def registered(source: Database) -> list[Registered]:
    """Every adapter row of `source`, by advisor and version."""
    with source.read() as conn:
        rows = conn.execute(
            "SELECT advisor_id, version, path FROM adapters ORDER BY advisor_id, version"
        ).fetchall()
    return [Registered(r["advisor_id"], r["version"], Path(r["path"])) for r in rows]


def unmoved_roots(versions: list[Registered]) -> list[Path]:
    """The folders the rows point into when they are not moved: `<root>` of each
    `<root>/<advisor>/v<N>` (another layout: the version's own folder)."""
    roots = set()
    for v in versions:
        laid_out = v.path.name == f"v{v.version}" and v.path.parent.name == v.advisor_id
        roots.add(v.path.parent.parent if laid_out else v.path)
    return sorted(roots)


def copy_adapters(versions: list[Registered], shared_dir: Path) -> list[AdapterCopy]:
    """Copy each version's folder to `shared_dir/adapters/<advisor>/v<N>`, verified.

    Every source is checked (and every existing target compared) before anything is
    written, so a damaged version stops the copy with nothing half done."""
    root = Path(shared_dir).expanduser().absolute() / "adapters"
    plans = [_plan(v, root) for v in versions]
    return [_carry_out(plan) for plan in plans]


@dataclass(frozen=True)
class _Plan:
    version: Registered
    target: Path
    hashes: dict[str, str]  # relative path -> sha256 of the source's files
    action: str


def _plan(v: Registered, root: Path) -> _Plan:
    # The row's advisor id and version become path parts: parse them as a name first.
    advisor_id, version = parse_adapter_ref(v.ref)
    target = root / advisor_id / f"v{version}"
    try:
        adapter_format.verify_dir(v.path)
    except MondrianError as exc:
        raise InvalidInput(
            f"adapter {v.ref} cannot be copied: {exc} (restore its folder, or "
            f"`mondrian adapters delete {v.ref}` if it is not needed, then copy again)"
        ) from None
    hashes = tree_hashes(v.path)
    if target.exists() and target.resolve() == v.path.resolve():
        return _Plan(v, target, hashes, "in place")
    if target.exists():
        if not target.is_dir() or tree_hashes(target) != hashes:
            raise InvalidInput(
                f"{target} exists and does not hold {v.ref}'s files; move it away or "
                "choose another --shared-dir"
            )
        return _Plan(v, target, hashes, "present")
    return _Plan(v, target, hashes, "copied")


def _carry_out(plan: _Plan) -> AdapterCopy:
    v, target = plan.version, plan.target
    if plan.action == "copied":
        with staging_area(target.parent, STAGING_PREFIX) as staging:
            # Into the stage itself (it exists): the folder's files, links followed.
            shutil.copytree(v.path, staging, dirs_exist_ok=True)
            make_readable(staging)  # shared data: a server running as another user reads it
            fsync_dir(staging)
            os.rename(staging, target)  # fails, never overwrites, if one appeared meanwhile
            fsync_dir(target.parent)
    adapter_format.verify_dir(target)
    if tree_hashes(target) != plan.hashes:
        raise MondrianError(f"adapter {v.ref} did not copy intact to {target}")
    return AdapterCopy(v.advisor_id, v.version, v.path, target, len(plan.hashes), plan.action)


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by its path relative to it."""
    hashes: dict[str, str] = {}
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        for name in filenames:
            path = Path(dirpath) / name
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            hashes[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashes
