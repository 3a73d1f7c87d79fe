"""PostgreSQL, for several service replicas sharing one state (MONDRIAN_DATABASE_URL).

The same interface as the SQLite `Database` (storage/db.py): `read()` blocks on a pooled
connection inside one read-only snapshot, `write(fn, *args)` runs `fn(conn, *args)` in a
transaction. The storage functions do not know which database they talk to: they get a
`Connection` here that takes SQLite's spelling (storage/dialect.py).

One writer at a time, as on SQLite: every write transaction begins by taking one
transaction-scoped advisory lock (`pg_advisory_xact_lock`), so the check-then-act
functions of storage/ (a job's status guard, the bounded queue's count, the next adapter
version) are atomic across every replica exactly as SQLite's `BEGIN IMMEDIATE` makes them
across processes. Reads never take it. The migrations run as such a write, so replicas
that start together apply each one once. psycopg is imported here only, when a
PostgreSQL URL is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from mondrian.errors import MondrianError
from mondrian.storage.dialect import WRITE_LOCK, Dialect, redact_url, to_postgres

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5
POOL_SIZE = 8


class DatabaseUnavailable(MondrianError):
    code = "database_unavailable"
    http_status = 503


class Row(tuple):
    """A result row read by position or by column name, as `sqlite3.Row` is."""

    _names: dict[str, int]

    def __new__(cls, names: dict[str, int], values: Sequence[Any]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return super().__getitem__(self._names[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(names, values)


class Connection:
    """A psycopg connection that takes SQLite's spelling; what storage functions get."""

    dialect = Dialect.POSTGRES

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        has = bool(params)
        return self.raw.execute(to_postgres(sql, has), tuple(params) if has else None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(to_postgres(sql, True), rows)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE


class _Slot(threading.local):
    read: Connection | None = None
    write: Connection | None = None


def check_reachable(url: str) -> None:
    """Connect once, so that a bad URL or a server that is down is one clear message."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {first}") from None


class PostgresDatabase:
    """A PostgreSQL database shared by replicas: a connection pool and the write lock."""

    dialect = Dialect.POSTGRES
    shared = True  # other servers may run jobs from the same queue

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: Any = None
        self._lock = threading.Lock()
        self._local = _Slot()
        self._submitter: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact_url(self.url)!r}, open={self.is_open})"

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def open(self) -> PostgresDatabase:
        """Connect (one clear error if that fails), then apply pending migrations."""
        from psycopg_pool import ConnectionPool

        from mondrian.storage.migrations import migrate

        with self._lock:
            if self._pool is not None:
                return self
            check_reachable(self.url)
            pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True, "row_factory": _row_factory},
                open=False,
                name="mondrian",
            )
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
            self._pool = pool
            # Submitted writes run in order on one thread (the worker's progress updates).
            self._submitter = ThreadPoolExecutor(1, thread_name_prefix="mondrian-db-submit")
        try:
            self.write(migrate)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            submitter, self._submitter = self._submitter, None
        if submitter is not None:
            submitter.shutdown(wait=True)
        if pool is not None:
            pool.close()

    def __enter__(self) -> PostgresDatabase:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_pool(self) -> Any:
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"{self!r} is not open; call open() or use it in a `with`")
        return pool

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection inside one read-only snapshot (REPEATABLE READ) for the block."""
        local = self._local
        if local.write is not None:  # a read inside a write sees the write's own changes
            yield local.write
            return
        if local.read is not None:
            yield local.read
            return
        with self._require_pool().connection() as raw, raw.transaction():
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            local.read = Connection(raw)
            try:
                yield local.read
            finally:
                local.read = None

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` in a transaction that holds the write lock; an
        exception rolls it back. Called from inside a write, it joins that transaction."""
        local = self._local
        if local.write is not None:
            return fn(local.write, *args, **kwargs)
        with self._require_pool().connection() as raw, raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            local.write = Connection(raw)
            try:
                return fn(local.write, *args, **kwargs)
            finally:
                local.write = None

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """`write` on a background thread; a Future of its result (writes submitted from
        one process run in the order they were submitted)."""
        submitter = self._submitter
        if submitter is None:
            raise RuntimeError(f"{self!r} is not open; call open() or use it in a `with`")
        return submitter.submit(self.write, fn, *args, **kwargs)

    def open_readers(self) -> int:
        """Connections the pool holds now (for /health, as the SQLite reader count)."""
        pool = self._pool
        return 0 if pool is None else int(pool.get_stats().get("pool_size", 0))
