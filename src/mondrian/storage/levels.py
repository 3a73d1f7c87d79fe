"""A database's migration level, read without changing it (`mondrian db check`)."""

from __future__ import annotations

from dataclasses import dataclass

from mondrian.config import Settings
from mondrian.storage.bootstrap import database_url
from mondrian.storage.db import connect
from mondrian.storage.migrations import MIGRATIONS, applied


@dataclass(frozen=True)
class Level:
    server: str  # "SQLite 3.40.1", "PostgreSQL 15.18"
    applied: list[str]

    @property
    def known(self) -> int:
        return len(MIGRATIONS)

    @property
    def pending(self) -> list[str]:
        return [m.name for m in MIGRATIONS if m.name not in self.applied]

    @property
    def unknown(self) -> list[str]:
        """Applied here but not known to this Mondrian: a newer one wrote the database."""
        names = {m.name for m in MIGRATIONS}
        return [name for name in self.applied if name not in names]


def read_level(settings: Settings) -> Level | None:
    """The level of the state's database; None when the SQLite file does not exist yet.
    A PostgreSQL server that cannot be reached raises `DatabaseUnavailable`."""
    url = database_url(settings)
    if url is None:
        if not settings.db_path.is_file():
            return None
        import sqlite3

        conn = connect(settings.db_path)
        try:
            return Level(f"SQLite {sqlite3.sqlite_version}", applied(conn))
        finally:
            conn.close()
    import psycopg

    from mondrian.storage.postgres import CONNECT_TIMEOUT_S, Connection, check_reachable

    check_reachable(url)
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as raw:
        version = raw.execute("SHOW server_version").fetchone()[0]
        return Level(f"PostgreSQL {version.split()[0]}", applied(Connection(raw)))
