"""A real PostgreSQL for the tests: `initdb` into a temporary folder, `pg_ctl start` on a
Unix socket there (no TCP port), stopped at the end of the session.

`pg_server` (a session fixture, tests/conftest.py) yields a `PgServer`; `fresh_database()`
makes an empty database on it and returns its URL, so each test starts from nothing.
Without PostgreSQL's binaries or psycopg the tests that need it skip, saying which is
missing; with CI=true they fail instead, so CI never passes by skipping them (.ci/run
installs Debian's `postgresql`). As root (a container), the server runs as the
`postgres` user, or `nobody`: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin")
USER = "mondrian"


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: Debian's (newest version first), else PATH's."""
    for pattern in BIN_DIRS:
        for folder in sorted(glob.glob(pattern), reverse=True):
            if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
                return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg and psycopg_pool are not installed (pip install 'mondrian[postgres]')"
    if find_bin() is None:
        return "PostgreSQL is not installed (initdb and pg_ctl not found; apt install postgresql)"
    return None


def require_postgres() -> None:
    """Skip (locally) or fail (CI=true) when PostgreSQL cannot run."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


class PgServer:
    def __init__(self, root: Path) -> None:
        self.bin = find_bin()
        assert self.bin is not None
        self.root = root
        self.data = root / "data"
        self.socket_dir = root
        self._names = itertools.count()
        self._runas: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _has_user("postgres") else "nobody"
            os.chown(root, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            self._runas = ["runuser", "-u", user, "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._runas, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PgServer:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        options = f"-k {self.socket_dir} -c listen_addresses='' -F -c max_connections=200"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "-o", options, "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    def fresh_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def serve_pg() -> Iterator[PgServer]:
    """The body of the session fixture."""
    require_postgres()
    root = Path(tempfile.mkdtemp(prefix="mondrian-pg-"))
    os.chmod(root, 0o755)
    server = PgServer(root)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
