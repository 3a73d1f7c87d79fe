"""Advisors in the database: the `Advisor` model stored whole as JSON."""

from __future__ import annotations

import sqlite3

from mondrian.advisors.model import Advisor
from mondrian.errors import NotFound
from mondrian.storage.db import utcnow


def upsert_advisor(conn: sqlite3.Connection, advisor: Advisor, builtin: bool = False) -> None:
    """Insert or replace an advisor's data; `created_at` survives a replace."""
    now = utcnow()
    conn.execute(
        """
        INSERT INTO advisors (id, name, data, builtin, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET
            name = excluded.name, data = excluded.data,
            builtin = excluded.builtin, updated_at = excluded.updated_at
        """,
        (advisor.id, advisor.name, advisor.model_dump_json(), int(builtin), now, now),
    )


def get_advisor(conn: sqlite3.Connection, advisor_id: str) -> Advisor | None:
    row = conn.execute("SELECT data FROM advisors WHERE id = ?", (advisor_id,)).fetchone()
    return None if row is None else Advisor.model_validate_json(row["data"])


def require_advisor(conn: sqlite3.Connection, advisor_id: str) -> Advisor:
    """Like `get_advisor`, but a missing advisor is a `NotFound`."""
    advisor = get_advisor(conn, advisor_id)
    if advisor is None:
        raise NotFound(f"no advisor {advisor_id!r}")
    return advisor


def list_advisors(conn: sqlite3.Connection, builtin: bool | None = None) -> list[Advisor]:
    """All advisors by id; `builtin=True/False` keeps only the shipped / user-made ones."""
    if builtin is None:
        rows = conn.execute("SELECT data FROM advisors ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            "SELECT data FROM advisors WHERE builtin = ? ORDER BY id", (int(builtin),)
        ).fetchall()
    return [Advisor.model_validate_json(row["data"]) for row in rows]


def is_builtin(conn: sqlite3.Connection, advisor_id: str) -> bool:
    row = conn.execute("SELECT builtin FROM advisors WHERE id = ?", (advisor_id,)).fetchone()
    if row is None:
        raise NotFound(f"no advisor {advisor_id!r}")
    return bool(row["builtin"])


def delete_advisor(conn: sqlite3.Connection, advisor_id: str) -> None:
    """Delete an advisor with its portfolio and profiles.

    Jobs, reviews and adapters stay: they are history (and adapters have files on disk,
    which their owner removes with `adapters.delete_adapter`).
    """
    cur = conn.execute("DELETE FROM advisors WHERE id = ?", (advisor_id,))
    if cur.rowcount == 0:
        raise NotFound(f"no advisor {advisor_id!r}")
    conn.execute("DELETE FROM profiles WHERE advisor_id = ?", (advisor_id,))
    conn.execute("DELETE FROM portfolio WHERE advisor_id = ?", (advisor_id,))
