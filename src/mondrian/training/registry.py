"""Adapter versions on disk and in the database, kept in step.

Each version is a directory `adapters_dir/<advisor>/v<N>/` that describes itself
(`mondrian_adapter.json`) beside the PEFT files. A version comes into being
in one write transaction: its number is taken, the finished staging directory (written
beside it, same file system) is renamed to `v<N>` and the row is inserted. A crash before
the rename leaves only a `.staging-*` folder; a crash after it but before the commit
leaves an unregistered `v<N>` that the next publish of that advisor removes. So a
registered version always has a complete directory, and since activation only flips rows
(one transaction, a partial unique index allows one active row), the active adapter is
never half-written or missing, whatever is killed when.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mondrian import adapter_format
from mondrian.adapter_format import ADAPTER_META, META_FORMAT
from mondrian.config import Settings
from mondrian.staging import fsync_dir, make_readable, staging_area
from mondrian.storage import adapters as store
from mondrian.storage.adapters import Adapter, adapter_ref, parse_adapter_ref
from mondrian.storage.db import Database


def version_dir(settings: Settings, advisor_id: str, version: int) -> Path:
    return settings.adapters_dir / advisor_id / f"v{version}"


STAGING_PREFIX = ".staging-"


def staged_version(settings: Settings, advisor_id: str) -> contextlib.AbstractContextManager[Path]:
    """An empty folder on the adapters' file system to write a version into, removed on
    exit unless `publish` renamed it into place.

    It is private (0700) while it is written; `publish` gives the version readable modes."""
    return staging_area(settings.adapters_dir / advisor_id, STAGING_PREFIX)


def new_staging_dir(settings: Settings, advisor_id: str) -> Path:
    """`staged_version`'s folder, left for the caller to publish or remove."""
    parent = settings.adapters_dir / advisor_id
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))


def verify_adapter_dir(path: Path, *, require_meta: bool = True) -> dict[str, Any]:
    """`adapter_format.verify_dir`, with the metadata as written (the JSON object the
    registry stores beside the version's row)."""
    return adapter_format.verify_dir(path, require_meta=require_meta).as_dict()


def publish(
    db: Database,
    settings: Settings,
    advisor_id: str,
    staging: Path,
    base_model: str,
    metadata: Mapping[str, Any],
    *,
    activate: bool | None = None,
) -> tuple[Adapter, bool]:
    """Install a finished staging directory as the advisor's next version and register it.

    `activate`: True activates it, False never, None (the default) activates it only when
    the advisor has no active adapter (so a first version serves at once, and a running
    service never switches to a new version nobody chose). Returns (adapter, activated).
    """
    staging = Path(staging)
    verify_adapter_dir(staging, require_meta=False)

    def install(conn: sqlite3.Connection) -> tuple[Adapter, bool]:
        version = store.next_version(conn, advisor_id)  # checked against register's below
        final = version_dir(settings, advisor_id, version)
        if final.exists():
            # Renamed by a run that died before its commit: never registered, so no job
            # and no reader knows it.
            if store.get_adapter(conn, advisor_id, version) is not None:
                raise RuntimeError(f"{final} exists and is registered; refusing to overwrite")
            shutil.rmtree(final)
        typed = adapter_format.parse_meta(
            {
                "format": META_FORMAT,
                **metadata,
                "advisor_id": advisor_id,
                "version": version,
                "ref": adapter_ref(advisor_id, version),
                "base_model": base_model,
            },
            staging / ADAPTER_META,
        )
        adapter_format.write_meta(staging, typed)
        meta = typed.as_dict()
        # A version is shared data: a server running as another user reads it.
        make_readable(staging)
        fsync_dir(staging)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, final)
        fsync_dir(final.parent)
        try:
            registered = store.register_adapter(conn, advisor_id, final, base_model, meta)
            if registered != version:
                raise RuntimeError(
                    f"version numbering disagrees with storage ({registered} != {version})"
                )
            activated = bool(activate) or (
                activate is None and store.get_active(conn, advisor_id) is None
            )
            if activated:
                store.activate(conn, advisor_id, version)
        except BaseException:
            os.rename(final, staging)  # the transaction rolls back; so does the directory
            raise
        return store.require_adapter(conn, advisor_id, version), activated

    return db.write(install)


def resolve(db: Database, ref: str) -> Adapter:
    advisor_id, version = parse_adapter_ref(ref)
    with db.read() as conn:
        return store.require_adapter(conn, advisor_id, version)


def list_versions(db: Database, advisor_id: str | None = None) -> list[Adapter]:
    with db.read() as conn:
        return store.list_adapters(conn, advisor_id)


def activate_version(db: Database, ref: str) -> Adapter:
    """Make `advisor@vN` active, after checking its directory is complete."""
    adapter = resolve(db, ref)
    verify_adapter_dir(adapter.path)
    return db.write(store.activate, adapter.advisor_id, adapter.version)


def rollback_advisor(db: Database, advisor_id: str) -> Adapter:
    """Activate the version below the active one (its directory checked first)."""
    with db.read() as conn:
        active = store.get_active(conn, advisor_id)
        older = [
            a
            for a in store.list_adapters(conn, advisor_id)
            if active is not None and a.version < active.version
        ]
    if active is not None and older:
        verify_adapter_dir(older[-1].path)
    return db.write(store.rollback, advisor_id)


def deactivate_advisor(db: Database, advisor_id: str) -> Adapter | None:
    """Serve the base model again; the version that was active, if any."""
    return db.write(store.deactivate, advisor_id)


def delete_version(db: Database, settings: Settings, ref: str) -> tuple[Adapter, bool]:
    """Forget `advisor@vN` (refused while it is active), then remove its files.

    The row goes first, so no reader is ever handed a path whose files are being
    deleted. Files are removed only inside `adapters_dir`: a registry row is never a
    licence to delete an arbitrary folder. Returns (adapter, files_removed).
    """
    advisor_id, version = parse_adapter_ref(ref)
    adapter = db.write(store.delete_adapter, advisor_id, version)
    root = settings.adapters_dir.resolve()
    path = adapter.path.resolve()
    if path.is_dir() and path.is_relative_to(root) and path != root:
        shutil.rmtree(path)
        return adapter, True
    return adapter, False


def describe(adapter: Adapter) -> dict[str, Any]:
    """A JSON-able summary for `mondrian adapters list --json`."""
    meta = adapter.metadata
    metrics = meta.get("metrics", {})
    return {
        "ref": adapter.ref,
        "advisor_id": adapter.advisor_id,
        "version": adapter.version,
        "active": adapter.active,
        "base_model": adapter.base_model,
        "path": str(adapter.path),
        "created_at": adapter.created_at,
        "rank": meta.get("hyperparameters", {}).get("rank"),
        "train_loss": (metrics.get("train_loss") or [None])[-1],
        "val_loss": (metrics.get("val_loss") or [None])[-1],
        "examples": meta.get("dataset", {}).get("train_examples"),
        "prompt_version": meta.get("prompt_version"),
        # None: unknown (an adapter trained before the field, or elsewhere); it still loads.
        "facts_version": meta.get("facts_version"),
    }
