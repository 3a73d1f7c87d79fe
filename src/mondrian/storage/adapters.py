"""Adapter versions per advisor, at most one active, named `advisor@vN` everywhere.

This module keeps the registry; the files belong to whoever trains and exports them
(register a version only once its directory is complete). Activation and roll-back are
one UPDATE pair inside `Database.write`'s transaction, so readers see either the old
active version or the new one, never none and never two (a partial UNIQUE index makes
two active versions impossible, whatever the caller does). Version numbers are never
reused, even after a delete: jobs record the version that served them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondrian.advisors.model import ADVISOR_ID_PATTERN
from mondrian.errors import InvalidInput, NotFound
from mondrian.storage.db import json_text, json_value, utcnow

_REF = re.compile(r"^(?P<advisor>[a-z0-9_-]{1,64})@v(?P<version>[1-9][0-9]*)$")


@dataclass(frozen=True)
class Adapter:
    advisor_id: str
    version: int
    path: Path
    base_model: str
    metadata: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    created_at: str = ""

    @property
    def ref(self) -> str:
        return adapter_ref(self.advisor_id, self.version)


def adapter_ref(advisor_id: str, version: int) -> str:
    """`ansel@v3`: the one way a version is named to users."""
    return f"{advisor_id}@v{version}"


def parse_adapter_ref(ref: str) -> tuple[str, int]:
    """`'ansel@v3'` -> `('ansel', 3)`."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise InvalidInput(f"not an adapter version (expected advisor@vN, e.g. ansel@v1): {ref!r}")
    return match["advisor"], int(match["version"])


def _adapter(row: sqlite3.Row) -> Adapter:
    return Adapter(
        advisor_id=row["advisor_id"],
        version=row["version"],
        path=Path(row["path"]),
        base_model=row["base_model"],
        metadata=json_value(row["metadata"]) or {},
        active=bool(row["active"]),
        created_at=row["created_at"],
    )


def next_version(conn: sqlite3.Connection, advisor_id: str) -> int:
    """The number `register_adapter` gives the advisor's next version (never one reused)."""
    row = conn.execute(
        "SELECT last_version FROM adapter_versions WHERE advisor_id = ?", (advisor_id,)
    ).fetchone()
    # max() with the table too: rows written without the counter still win.
    top = conn.execute(
        "SELECT coalesce(max(version), 0) FROM adapters WHERE advisor_id = ?", (advisor_id,)
    ).fetchone()[0]
    return max(row["last_version"] if row else 0, top) + 1


def register_adapter(
    conn: sqlite3.Connection,
    advisor_id: str,
    path: str | Path,
    base_model: str,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Record a new (inactive) version for the advisor and return its number, from 1."""
    if not re.match(ADVISOR_ID_PATTERN, advisor_id or ""):
        raise InvalidInput(f"not an advisor id: {advisor_id!r}")
    if not base_model:
        raise InvalidInput("an adapter needs the base model it was trained on")
    version = next_version(conn, advisor_id)
    conn.execute(
        """
        INSERT INTO adapters (advisor_id, version, path, base_model, metadata, active, created_at)
        VALUES (?, ?, ?, ?, ?, 0, ?)
        """,
        (advisor_id, version, str(path), base_model, json_text(dict(metadata or {})), utcnow()),
    )
    conn.execute(
        """
        INSERT INTO adapter_versions (advisor_id, last_version) VALUES (?, ?)
        ON CONFLICT (advisor_id) DO UPDATE SET last_version = excluded.last_version
        """,
        (advisor_id, version),
    )
    return version


def list_adapters(conn: sqlite3.Connection, advisor_id: str | None = None) -> list[Adapter]:
    """Versions by advisor, then version number."""
    if advisor_id is None:
        rows = conn.execute("SELECT * FROM adapters ORDER BY advisor_id, version").fetchall()
    else:
        rows = conn.execute(
            "SELECT * FROM adapters WHERE advisor_id = ? ORDER BY version", (advisor_id,)
        ).fetchall()
    return [_adapter(row) for row in rows]


def get_adapter(conn: sqlite3.Connection, advisor_id: str, version: int) -> Adapter | None:
    row = conn.execute(
        "SELECT * FROM adapters WHERE advisor_id = ? AND version = ?", (advisor_id, version)
    ).fetchone()
    return None if row is None else _adapter(row)


def require_adapter(conn: sqlite3.Connection, advisor_id: str, version: int) -> Adapter:
    adapter = get_adapter(conn, advisor_id, version)
    if adapter is None:
        raise NotFound(f"no adapter {adapter_ref(advisor_id, version)}")
    return adapter


def get_active(conn: sqlite3.Connection, advisor_id: str) -> Adapter | None:
    """The advisor's active version, or None (then the `lora` mode is unavailable)."""
    row = conn.execute(
        "SELECT * FROM adapters WHERE advisor_id = ? AND active = 1", (advisor_id,)
    ).fetchone()
    return None if row is None else _adapter(row)


def activate(conn: sqlite3.Connection, advisor_id: str, version: int) -> Adapter:
    """Make `version` the advisor's active adapter (activating the active one is a no-op)."""
    require_adapter(conn, advisor_id, version)
    # Deactivate first: the partial unique index forbids two active rows even mid-statement.
    conn.execute(
        "UPDATE adapters SET active = 0 WHERE advisor_id = ? AND active = 1 AND version != ?",
        (advisor_id, version),
    )
    conn.execute(
        "UPDATE adapters SET active = 1 WHERE advisor_id = ? AND version = ?", (advisor_id, version)
    )
    return require_adapter(conn, advisor_id, version)


def deactivate(conn: sqlite3.Connection, advisor_id: str) -> Adapter | None:
    """Serve the base model again; returns the version that was active, if any."""
    active = get_active(conn, advisor_id)
    if active is not None:
        conn.execute(
            "UPDATE adapters SET active = 0 WHERE advisor_id = ? AND active = 1", (advisor_id,)
        )
    return active


def rollback(conn: sqlite3.Connection, advisor_id: str) -> Adapter:
    """Activate the highest version below the active one and return it."""
    active = get_active(conn, advisor_id)
    if active is None:
        raise InvalidInput(f"advisor {advisor_id!r} has no active adapter to roll back from")
    row = conn.execute(
        "SELECT max(version) FROM adapters WHERE advisor_id = ? AND version < ?",
        (advisor_id, active.version),
    ).fetchone()
    if row[0] is None:
        raise InvalidInput(
            f"{active.ref} is the oldest version of {advisor_id!r}; nothing to roll back to "
            f"(use deactivate to serve the base model)"
        )
    return activate(conn, advisor_id, row[0])


def delete_adapter(conn: sqlite3.Connection, advisor_id: str, version: int) -> Adapter:
    """Forget a version and return it (its files are the caller's to remove).

    The active version cannot be deleted: activate another one, or deactivate, first.
    """
    adapter = require_adapter(conn, advisor_id, version)
    if adapter.active:
        raise InvalidInput(
            f"{adapter.ref} is active; activate another version or deactivate it before deleting it"
        )
    conn.execute("DELETE FROM adapters WHERE advisor_id = ? AND version = ?", (advisor_id, version))
    return adapter
