"""Storage: SQLite with one writer, or PostgreSQL shared by replicas (MONDRIAN_DATABASE_URL,
storage/postgres.py); repositories are functions over a connection, written once for both
(the differences are storage/dialect.py's).

    with Database.for_settings(settings) as db:
        job = db.write(jobs.create_job, "ansel", image_hash, "rag", model_id)
        with db.read() as conn:
            job = jobs.get_job(conn, job.id)

Reads take `db.read()`; every change goes through `db.write(fn, *args)`, which runs
`fn(conn, *args)` in one transaction on the writer thread.
"""

from mondrian.storage.db import Database, connect, utcnow

__all__ = ["Database", "connect", "utcnow"]
