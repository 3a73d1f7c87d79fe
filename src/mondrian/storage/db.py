"""SQLite, one writer: connections, the write queue, and timestamps.

The design follows datasette's `Database`: reads run on pooled connections, every
write runs on the one thread this `Database` owns, fed by a queue. A read connection is
lent to a thread for one `read()` block and returned to the pool after it: the service's
request threads come and go (the thread pool retires idle ones), and a connection kept per
thread would outlive its thread, two descriptors each, for the life of the process.
Inside one process the one writer removes write contention entirely; across processes
(a CLI run beside the service, several workers) SQLite's file lock serialises writers,
and `BEGIN IMMEDIATE` plus a long `busy_timeout` make a second writer wait for the lock
instead of failing.
`BEGIN IMMEDIATE` matters in WAL mode: a deferred transaction that reads first and then
writes cannot wait for the lock (SQLITE_BUSY_SNAPSHOT is returned at once), so every
write transaction takes the write lock before it reads anything.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mondrian.errors import InvalidInput
from mondrian.storage.dialect import Dialect

if TYPE_CHECKING:
    from mondrian.config import Settings

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0


def utcnow() -> str:
    """Now as ISO-8601 UTC with microseconds; one fixed format, so text order is time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def connect(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection set up the one way Mondrian uses SQLite.

    Autocommit mode (`isolation_level=None`): Python's sqlite3 module must not open
    transactions behind our back; `Database.write` issues `BEGIN IMMEDIATE` itself.
    """
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a fresh file to WAL needs an exclusive lock, and that step does not always
    # go through the busy handler: when several processes open a new database at once,
    # one of them can get "database is locked" immediately. Retry for the busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(
            f"could not switch the database to WAL mode (got {mode!r}); "
            "is it in memory or on a file system without shared memory?"
        )


_STOP = object()

# Idle read connections kept for reuse; more are opened when more threads read at once,
# and closed when returned to a full pool.
MAX_IDLE_READERS = 8


class _ReadSlot(threading.local):
    """The connection lent to this thread for its open `read()` block, if any."""

    conn: sqlite3.Connection | None = None


class Database:
    """One SQLite file: a pool of read connections and one writer thread.

    Use as `with Database(path) as db:` or call `open()` / `close()`. Opening applies the
    migrations. `write(fn, *args)` runs `fn(conn, *args)` in a transaction on the writer
    thread and returns its result; `with db.read() as conn:` gives this thread's read
    connection inside a read transaction (one consistent snapshot for the whole block).
    """

    max_idle_readers = MAX_IDLE_READERS
    dialect = Dialect.SQLITE
    # One server per home (bootstrap.serving_home): a job left running is an orphan.
    shared = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_ident: int | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._accepting = False
        self._local = _ReadSlot()
        self._readers: set[sqlite3.Connection] = set()  # this opening's, idle or lent
        self._idle: list[sqlite3.Connection] = []

    @classmethod
    def for_settings(cls, settings: Settings) -> Database:
        """The SQLite file under `MONDRIAN_HOME` (not yet open); bootstrap.database_for
        picks PostgreSQL instead when MONDRIAN_DATABASE_URL names one."""
        path = settings.db_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r}, open={self.is_open})"

    @property
    def is_open(self) -> bool:
        return self._accepting

    # --- lifecycle ----------------------------------------------------------------

    def open(self) -> Database:
        """Start the writer thread and apply pending migrations. Opening twice is a no-op."""
        from mondrian.storage.migrations import migrate

        with self._lock:
            if self._accepting:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            ready: Future[None] = Future()
            self._queue = queue.SimpleQueue()
            writer = threading.Thread(
                target=self._run_writer, args=(ready,), name="mondrian-db-writer", daemon=True
            )
            writer.start()
            ready.result()  # re-raises a failure to open the file
            # Migrations run before anyone else can queue a write (we hold the lock).
            migrated: Future[None] = Future()
            self._queue.put((migrate, (), {}, migrated))
            try:
                migrated.result()
            except BaseException:
                self._queue.put(_STOP)
                writer.join()
                raise
            self._writer = writer
            self._accepting = True
        return self

    def close(self) -> None:
        """Finish queued writes, stop the writer, close every connection. Idempotent."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._accepting = False
                self._queue.put(_STOP)
            idle, self._idle = self._idle, []
            self._readers = set()
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        # A connection lent out now is closed when its block returns it (_give_back).
        for conn in idle:
            conn.close()

    def __enter__(self) -> Database:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads --------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection, inside one read transaction.

        Nested `read()` blocks in one thread share the outer transaction. Writes made
        through `write()` while a block is open are not visible until it ends (snapshot).
        """
        if not self._accepting:
            raise RuntimeError(f"{self!r} is not open; call open() or use it in a `with`")
        local = self._local
        if local.conn is not None:  # nested: the outer block's transaction
            yield local.conn
            return
        conn = self._lend()
        local.conn = conn
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            local.conn = None
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # read-only: nothing to keep
            finally:
                self._give_back(conn)

    def _lend(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        # check_same_thread=False: a pooled connection serves one thread at a time, but
        # not always the thread that opened it.
        conn = connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        with self._lock:
            self._readers.add(conn)
        return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            keep = (
                self._accepting
                and conn in self._readers
                and len(self._idle) < self.max_idle_readers
            )
            if keep:
                self._idle.append(conn)
                return
            self._readers.discard(conn)
        conn.close()

    def open_readers(self) -> int:
        """Read connections open now, idle or lent (for tests and /health)."""
        with self._lock:
            return len(self._readers)

    # --- writes -------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(conn, *args, **kwargs)` for the writer; a Future of its result.

        For async callers: `await asyncio.wrap_future(db.submit(fn, ...))`.
        """
        if threading.get_ident() == self._writer_ident:
            raise RuntimeError("submit() from the writer thread would deadlock; use write()")
        future: Future[T] = Future()
        with self._lock:
            if not self._accepting:
                raise RuntimeError(f"{self!r} is not open; call open() or use it in a `with`")
            self._queue.put((fn, args, kwargs, future))
        return future

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` on the writer thread, in `BEGIN IMMEDIATE ...
        COMMIT`, and return its result. An exception rolls the transaction back and is
        raised here. Called from inside a write, it joins the running transaction."""
        if threading.get_ident() == self._writer_ident:
            assert self._writer_conn is not None
            return fn(self._writer_conn, *args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def _run_writer(self, ready: Future[None]) -> None:
        try:
            conn = connect(self.path)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self._writer_conn = conn
        self._writer_ident = threading.get_ident()
        ready.set_result(None)
        try:
            while True:
                task = self._queue.get()
                if task is _STOP:
                    break
                fn, args, kwargs, future = task
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = _in_transaction(conn, fn, args, kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            self._writer_conn = None
            self._writer_ident = None
            conn.close()


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args, **kwargs)
        if conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def json_text(value: Any) -> str:
    """JSON text for a column: a pydantic model, a JSON-able value, or JSON text as is.

    A `str` is taken to be JSON already and is checked, so a caller cannot store a
    plain string where a document belongs.
    """
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"expected JSON text, got {value[:80]!r}: {exc}") from None
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)
