"""Named schema migrations, applied in order, each at most once.

Append new migrations at the end; never edit or reorder one that has shipped (a database
that already ran it would not see the change). `migrate` runs inside the caller's write
transaction (`BEGIN IMMEDIATE` on SQLite, the advisory write lock on PostgreSQL: see
`Database.open` and storage/postgres.py), so when two processes open a fresh database at
once the second waits for the first, then finds everything applied. The SQL is written for
SQLite; storage/dialect.py `ddl` turns each statement into PostgreSQL's. DDL is
transactional on both: a migration that fails leaves no half-made schema behind.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from mondrian.storage.db import utcnow
from mondrian.storage.dialect import PRELUDE, Dialect, ddl, dialect_of, table_exists_sql


class Migration(NamedTuple):
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_advisors",
        """
        CREATE TABLE advisors (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            data TEXT NOT NULL CHECK (json_valid(data)),
            builtin INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    ),
    Migration(
        "0002_images_portfolio",
        """
        CREATE TABLE images (
            hash TEXT PRIMARY KEY CHECK (length(hash) = 64),
            path TEXT NOT NULL,
            mime TEXT NOT NULL,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
            created_at TEXT NOT NULL
        );
        CREATE TABLE portfolio (
            advisor_id TEXT NOT NULL,
            image_hash TEXT NOT NULL REFERENCES images(hash),
            title TEXT,
            added_at TEXT NOT NULL,
            PRIMARY KEY (advisor_id, image_hash)
        );
        """,
    ),
    Migration(
        "0003_profiles",
        """
        CREATE TABLE profiles (
            advisor_id TEXT NOT NULL,
            image_hash TEXT NOT NULL REFERENCES images(hash),
            critique TEXT NOT NULL CHECK (json_valid(critique)),
            source TEXT NOT NULL CHECK (source IN ('model', 'curated')),
            model TEXT,
            embedding BLOB,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (advisor_id, image_hash)
        );
        """,
    ),
    Migration(
        "0004_jobs",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            advisor_id TEXT NOT NULL,
            image_hash TEXT NOT NULL REFERENCES images(hash),
            mode_requested TEXT NOT NULL,
            mode_used TEXT,
            model_id TEXT NOT NULL,
            variant TEXT NOT NULL,
            adapter_version INTEGER,
            status TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'done', 'failed')),
            progress REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
            timings TEXT CHECK (timings IS NULL OR json_valid(timings)),
            result TEXT CHECK (result IS NULL OR json_valid(result)),
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX jobs_status ON jobs (status, created_at);
        CREATE INDEX jobs_advisor ON jobs (advisor_id, created_at);
        """,
    ),
    Migration(
        "0005_adapters",
        """
        CREATE TABLE adapters (
            advisor_id TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            path TEXT NOT NULL,
            base_model TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
            active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
            created_at TEXT NOT NULL,
            PRIMARY KEY (advisor_id, version)
        );
        CREATE UNIQUE INDEX adapters_one_active ON adapters (advisor_id) WHERE active = 1;
        -- The last version number handed out per advisor, so a deleted version's number
        -- is never reused: jobs record the version that served them.
        CREATE TABLE adapter_versions (
            advisor_id TEXT PRIMARY KEY,
            last_version INTEGER NOT NULL
        );
        """,
    ),
    Migration(
        "0006_reviews",
        """
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs(id),
            advisor_id TEXT NOT NULL,
            image_hash TEXT NOT NULL REFERENCES images(hash),
            critique TEXT NOT NULL CHECK (json_valid(critique)),
            reviewer TEXT,
            note TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX reviews_job ON reviews (job_id);
        CREATE INDEX reviews_advisor ON reviews (advisor_id, created_at);
        """,
    ),
    Migration(
        # Who wrote a review, and an operator's decision: only accepted reviews become
        # training data. Reviews stored before this are pending (anyone could write them).
        "0007_review_trust",
        """
        ALTER TABLE reviews ADD COLUMN author TEXT;
        ALTER TABLE reviews ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'accepted', 'rejected'));
        ALTER TABLE reviews ADD COLUMN decided_by TEXT;
        ALTER TABLE reviews ADD COLUMN decided_at TEXT;
        ALTER TABLE reviews ADD COLUMN digest TEXT;
        CREATE UNIQUE INDEX reviews_one_per_content ON reviews (job_id, digest);
        CREATE INDEX reviews_author ON reviews (author, created_at);
        CREATE INDEX reviews_status ON reviews (status, created_at);
        """,
    ),
    Migration(
        # What `mondrian history` shows of a job: the photo's file name, the EXIF facts read
        # from it (images.PhotoExif) and where its report was written; the newest-first
        # listing (`GET /jobs`) pages on created_at.
        "0008_job_files",
        """
        ALTER TABLE jobs ADD COLUMN photo_name TEXT;
        ALTER TABLE jobs ADD COLUMN exif TEXT CHECK (exif IS NULL OR json_valid(exif));
        ALTER TABLE jobs ADD COLUMN report_path TEXT;
        CREATE INDEX jobs_created ON jobs (created_at);
        """,
    ),
    Migration(
        # A shoot critiqued at once (`mondrian analyze DIR`, a multi-file upload in the
        # studio): the jobs of one batch share its id (storage/batches.py).
        "0009_batches",
        """
        CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            source TEXT NOT NULL CHECK (source IN ('cli', 'studio', 'api')),
            created_at TEXT NOT NULL
        );
        ALTER TABLE jobs ADD COLUMN batch_id TEXT REFERENCES batches(id);
        CREATE INDEX jobs_batch ON jobs (batch_id, created_at);
        """,
    ),
    Migration(
        # Several replicas share one queue (PostgreSQL): a claimed job carries a lease its
        # worker renews while it runs, and who holds it. A lease that runs out means its
        # replica died; another one re-queues or fails the job (job_leases.recover_expired).
        "0010_job_leases",
        """
        ALTER TABLE jobs ADD COLUMN lease_until TEXT;
        ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
        CREATE INDEX jobs_lease ON jobs (status, lease_until);
        """,
    ),
)


def statements(sql: str) -> list[str]:
    """Split a script into statements; a `;` inside a trigger body or string stays put.

    `executescript` would do this for us, but it commits first, and migrations must run
    inside the caller's transaction.
    """
    out: list[str] = []
    buf = ""
    *pieces, tail = sql.split(";")
    for piece in pieces:
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if _strip_comments(buf).strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    buf += tail
    if _strip_comments(buf).strip():
        raise ValueError(f"incomplete SQL statement (missing ';'?) in a migration: {buf!r}")
    return out


def _strip_comments(sql: str) -> str:
    # Only whole-line `--` comments: enough to tell an empty tail from a statement.
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


def applied(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations this database has run, in the order they ran."""
    exists = conn.execute(table_exists_sql(dialect_of(conn)), ("_migrations",)).fetchone()
    if not exists:
        return []
    rows = conn.execute("SELECT name FROM _migrations ORDER BY applied_at, rowid").fetchall()
    return [row[0] for row in rows]


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet applied, in order; return their names.

    Must run inside a write transaction (`db.write(migrate)`), so it is all or nothing
    and two processes migrating one file at once do not both apply a migration.
    """
    if not conn.in_transaction:
        raise RuntimeError("migrate() must run inside a transaction; use db.write(migrate)")
    names = [m.name for m in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"migration names must be unique: {names}")
    dialect = dialect_of(conn)
    done = set(applied(conn))
    if not done:
        if dialect is Dialect.POSTGRES:
            conn.execute(PRELUDE)
        conn.execute(
            ddl(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
                dialect,
            )
        )
    ran: list[str] = []
    for migration in migrations:
        if migration.name in done:
            continue
        for stmt in statements(migration.sql):
            conn.execute(ddl(stmt, dialect))
        conn.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (migration.name, utcnow())
        )
        ran.append(migration.name)
    return ran
