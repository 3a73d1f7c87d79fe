"""`mondrian doctor` with MONDRIAN_DATABASE_URL set: it checks that PostgreSQL (reachable,
its migration level read as `mondrian db check` reads it), names it, and leaves the SQLite
file under MONDRIAN_HOME alone."""

from __future__ import annotations

import psycopg
import pytest

from mondrian.cli import doctor_cmd
from mondrian.cli.main import main
from mondrian.config import load_settings
from mondrian.storage.migrations import MIGRATIONS

pytestmark = pytest.mark.postgres


def database_line(capsys) -> tuple[int, str, str]:
    code = main(["doctor"])
    out = capsys.readouterr().out
    return code, next(line for line in out.splitlines() if line.split()[1] == "database"), out


def test_doctor_checks_the_postgresql_it_is_given(pg_server, mondrian_home, monkeypatch, capsys):
    url = pg_server.fresh_database()
    monkeypatch.setenv("MONDRIAN_DATABASE_URL", url)
    # A new database: reachable, every migration still to run (a server runs them at start).
    fresh = doctor_cmd.database_check(load_settings())
    assert fresh.status == "warn", fresh
    assert fresh.detail.startswith(f"PostgreSQL {url}") and "(0/" in fresh.detail
    assert "mondrian db migrate" in fresh.detail

    assert main(["db", "migrate"]) == 0
    code, line, out = database_line(capsys)
    assert code == 0 and line.startswith("ok"), out
    known = len(MIGRATIONS)
    assert f"PostgreSQL {url}" in line and f"at {MIGRATIONS[-1].name} ({known}/{known})" in line
    assert "SQLite" not in line and not (mondrian_home / "mondrian.db").exists()

    # Written by a newer Mondrian: fails, as `mondrian db check` does.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES ('9999_from_the_future', 'now')"
        )
    code, line, _ = database_line(capsys)
    assert code == 1 and line.startswith("fail") and "9999_from_the_future" in line


def test_an_unreachable_or_foreign_url_fails_in_one_line(
    pg_server, mondrian_home, monkeypatch, tmp_path, capsys
):
    gone = f"postgresql://mondrian:s3cret@/db?host={tmp_path}"
    monkeypatch.setenv("MONDRIAN_DATABASE_URL", gone)
    code, line, out = database_line(capsys)
    assert code == 1 and line.startswith("fail") and "cannot connect to" in line, out
    assert "s3cret" not in out and "Traceback" not in out
    monkeypatch.setenv("MONDRIAN_DATABASE_URL", "mysql://somewhere/db")
    check = doctor_cmd.database_check(load_settings())
    assert check.status == "fail" and "must be a postgresql:// URL" in check.detail
