"""Connections, the one-writer Database, and migrations."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading

import pytest

from mondrian.config import Settings
from mondrian.storage import Database, connect
from mondrian.storage.dialect import dialect_of, table_exists_sql
from mondrian.storage.migrations import MIGRATIONS, Migration, applied, migrate, statements


def test_connect_sets_the_pragmas(tmp_path):
    conn = connect(tmp_path / "x.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.row_factory is sqlite3.Row
        assert conn.isolation_level is None
    finally:
        conn.close()


def test_migrations_are_named_unique_and_all_applied(db):
    names = [m.name for m in MIGRATIONS]
    assert len(set(names)) == len(names)
    assert all(m.name and m.sql.strip() for m in MIGRATIONS)
    with db.read() as conn:
        assert applied(conn) == names
        exists = table_exists_sql(dialect_of(conn))
        for table in ("advisors", "images", "portfolio", "profiles", "jobs", "adapters", "reviews"):
            assert conn.execute(exists, (table,)).fetchone(), table


def test_migrate_is_idempotent_across_reopen(tmp_path):
    path = tmp_path / "m.db"
    with Database(path) as db, db.read() as conn:
        first = conn.execute("SELECT name, applied_at FROM _migrations").fetchall()
    with Database(path) as db:
        assert db.write(migrate) == []
        with db.read() as conn:
            again = conn.execute("SELECT name, applied_at FROM _migrations").fetchall()
    assert [tuple(r) for r in again] == [tuple(r) for r in first]


def test_a_new_migration_applies_alone(db):
    extra = (*MIGRATIONS, Migration("9999_extra", "CREATE TABLE extra (x INTEGER);"))
    assert db.write(migrate, extra) == ["9999_extra"]
    assert db.write(migrate, extra) == []
    with db.read() as conn:
        assert applied(conn)[-1] == "9999_extra"


def test_reviews_stored_before_trust_become_pending(tmp_path):
    """Migration 0007 on a database whose reviews anyone could have written: they wait
    for an operator, their author unknown; none is training data until accepted."""
    conn = connect(tmp_path / "old.db")
    before = tuple(m for m in MIGRATIONS if m.name <= "0006_reviews")
    conn.execute("BEGIN IMMEDIATE")
    migrate(conn, before)
    now = "2026-01-01T00:00:00.000000Z"
    conn.execute("INSERT INTO images VALUES (?, 'p', 'image/png', 4, 3, 10, ?)", ("a" * 64, now))
    conn.execute(
        "INSERT INTO jobs (id, advisor_id, image_hash, mode_requested, model_id, variant, "
        "created_at) VALUES ('j', 'ansel', ?, 'baseline', 'm', 'base', ?)",
        ("a" * 64, now),
    )
    conn.execute(
        "INSERT INTO reviews (job_id, advisor_id, image_hash, critique, created_at) "
        "VALUES ('j', 'ansel', ?, '{}', ?)",
        ("a" * 64, now),
    )
    assert "0007_review_trust" in migrate(conn)
    conn.execute("COMMIT")
    row = conn.execute("SELECT status, author, decided_by, digest FROM reviews").fetchone()
    conn.close()
    assert tuple(row) == ("pending", None, None, None)


def test_a_failing_migration_leaves_nothing_behind(tmp_path):
    path = tmp_path / "f.db"
    bad = (
        Migration("0001_ok", "CREATE TABLE ok (x INTEGER);"),
        Migration("0002_bad", "CREATE TABLE half (x INTEGER); CREATE TABLE ok (y INTEGER);"),
    )
    conn = connect(path)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn, bad)
    conn.execute("ROLLBACK")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables.isdisjoint({"ok", "half", "_migrations"})


def test_migrate_refuses_to_run_outside_a_transaction(tmp_path):
    conn = connect(tmp_path / "t.db")
    with pytest.raises(RuntimeError, match="inside a transaction"):
        migrate(conn)
    conn.close()


def test_statements_keep_semicolons_inside_triggers_and_strings():
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d'; DELETE FROM t WHERE 0;
    END;
    -- trailing comment
    """
    got = statements(sql)
    assert len(got) == 2
    assert got[0].endswith("DEFAULT 'a;b');")
    assert got[1].startswith("CREATE TRIGGER") and got[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        statements("CREATE TABLE t (x INTEGER); CREATE TABLE u (y")


def test_write_returns_the_result_and_commits(db):
    def insert(conn, name):
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, 'now')", (name,))
        return name.upper()

    assert db.write(insert, "probe") == "PROBE"
    with db.read() as conn:
        assert conn.execute("SELECT 1 FROM _migrations WHERE name = 'probe'").fetchone()


def test_write_rolls_back_and_reraises(db):
    class Boom(Exception):
        pass

    def insert_then_fail(conn):
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('ghost', 'now')")
        raise Boom("no")

    with pytest.raises(Boom, match="no"):
        db.write(insert_then_fail)
    with db.read() as conn:
        assert conn.execute("SELECT 1 FROM _migrations WHERE name = 'ghost'").fetchone() is None
    assert db.write(lambda conn: conn.in_transaction)  # the writer survived, in a new txn


def test_check_then_write_is_atomic_across_threads(db):
    """A read-modify-write inside `write` never loses an update: one writer at a time (the
    writer thread on SQLite; the advisory write lock on PostgreSQL)."""
    db.write(
        lambda conn: conn.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES ('counter', '0')"
        )
    )

    def bump(conn):
        (value,) = conn.execute(
            "SELECT applied_at FROM _migrations WHERE name = 'counter'"
        ).fetchone()
        conn.execute(
            "UPDATE _migrations SET applied_at = ? WHERE name = 'counter'", (str(int(value) + 1),)
        )

    def many():
        for _ in range(25):
            db.write(bump)

    threads = [threading.Thread(target=many) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as conn:
        row = conn.execute("SELECT applied_at FROM _migrations WHERE name = 'counter'").fetchone()
    assert row[0] == "150"


def test_nested_writes_join_the_running_transaction(db):
    def inner(conn):
        return conn.in_transaction

    assert db.write(lambda conn: db.write(inner)) is True


def test_all_writes_run_on_one_thread_even_when_nested(sqlite_db):
    db = sqlite_db
    seen: list[int] = []

    def inner(conn):
        seen.append(threading.get_ident())
        return conn.in_transaction

    def outer(conn):
        seen.append(threading.get_ident())
        return db.write(inner)  # joins the running transaction instead of deadlocking

    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(db.write(outer))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()


def test_submit_serves_async_callers(db):
    async def main():
        return await asyncio.wrap_future(db.submit(lambda conn, x: x * 2, 21))

    assert asyncio.run(main()) == 42


def test_read_connections_are_read_only_and_one_per_open_block(db):
    with db.read() as conn, pytest.raises(Exception, match=r"readonly|read-only") as raised:
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('x', 'y')")
    assert type(raised.value).__name__ in ("OperationalError", "ReadOnlySqlTransaction")
    with db.read() as a, db.read() as b:
        assert a is b  # nested blocks share the connection and its transaction
    inside = threading.Event()
    release = threading.Event()
    other: list[object] = []

    def hold():
        with db.read() as conn:
            other.append(conn)
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(10)
    with db.read() as mine:
        assert other[0] is not mine  # two open blocks at once: two connections
    release.set()
    t.join()


def test_threads_that_come_and_go_reuse_pooled_connections(sqlite_db):
    """Many short-lived threads (a server's request threads) leave no connection behind:
    the pool holds at most `max_idle_readers` idle ones, whatever the threads did."""
    db = sqlite_db

    def burst(n: int) -> None:
        barrier = threading.Barrier(n)

        def read_once():
            barrier.wait(10)  # all read at once: the pool must grow to n, then shrink
            with db.read() as conn:
                conn.execute("SELECT count(*) FROM _migrations").fetchone()

        threads = [threading.Thread(target=read_once) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for _ in range(10):
        burst(20)
        assert db.open_readers() <= db.max_idle_readers
    for _ in range(10):
        burst(20)
    assert db.open_readers() <= db.max_idle_readers
    # The descriptors on the database's files (the .db and -wal of each connection, one
    # -shm; the rest of the process, another test's threads under xdist, may open others):
    # the idle readers' and the writer's, not a set per thread that ever read (200 threads
    # here). Measured: 21-31. SQLite may keep a closed connection's descriptor open while
    # another connection holds a lock on the file, hence up to 4 a pooled connection.
    assert _fds_on(db.path) <= 4 * (db.max_idle_readers + 1)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fds_on(path) -> int:
    """Descriptors of this process open on `path` or its -wal/-shm companions."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listed
            continue
        count += target.startswith(str(path))
    return count


def test_close_closes_idle_readers_and_a_lent_one_on_return(tmp_path):
    db = Database(tmp_path / "p.db").open()
    with db.read() as lent:
        with db.read():
            pass
        db.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        lent.execute("SELECT 1")
    assert db.open_readers() == 0


def test_read_block_is_one_snapshot(db):
    def insert(conn, name):
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, 'now')", (name,))

    count = "SELECT count(*) FROM _migrations"
    with db.read() as conn:
        before = conn.execute(count).fetchone()[0]
        db.write(insert, "during")
        assert conn.execute(count).fetchone()[0] == before
    with db.read() as conn:
        assert conn.execute(count).fetchone()[0] == before + 1


def test_closed_database_refuses_work_and_can_reopen(tmp_path):
    db = Database(tmp_path / "c.db")
    with pytest.raises(RuntimeError, match="not open"):
        db.write(lambda conn: None)
    db.open()
    assert db.open() is db  # idempotent
    db.close()
    db.close()
    with pytest.raises(RuntimeError, match="not open"), db.read():
        pass
    with db:
        assert db.write(lambda conn: 1) == 1


def test_for_settings_uses_home_and_creates_it(tmp_path):
    settings = Settings(home=tmp_path / "deep" / "home")
    db = Database.for_settings(settings)
    assert db.path == settings.db_path
    assert settings.db_path.parent.is_dir()
    with db, db.read() as conn:
        assert applied(conn) == [m.name for m in MIGRATIONS]


def test_open_failure_is_raised_and_leaves_no_writer(tmp_path):
    (tmp_path / "dir.db").mkdir()  # a directory cannot be opened as a database
    db = Database(tmp_path / "dir.db")
    before = threading.active_count()
    with pytest.raises(sqlite3.OperationalError):
        db.open()
    assert not db.is_open and threading.active_count() == before
