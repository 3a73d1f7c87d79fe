"""`mondrian db copy`: an existing SQLite state moved, one way, to an empty PostgreSQL.

Every table is copied in one write transaction on the target (all of it or nothing),
with SQLite's `rowid` kept (job pages and the queue order by it), then checked: each
table's row count and a digest of its rows must be equal on both sides, and every image
file must hash to its name (and, copied into a shared folder, hash there too). With a
shared folder the adapter versions' folders move there too (storage/copy_adapters.py) and
the copied `adapters` rows name their new paths: the digest compares the source's rows with
those paths put in. Nothing is trusted that was not read back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondrian.errors import InvalidInput, MondrianError
from mondrian.staging import write_atomic
from mondrian.storage.copy_adapters import AdapterCopy, copy_adapters, registered, unmoved_roots
from mondrian.storage.db import Database
from mondrian.storage.dialect import reset_identity_sql
from mondrian.storage.images import content_hash
from mondrian.storage.migrations import applied
from mondrian.storage.postgres import PostgresDatabase

# Parents before children (the foreign keys of storage/migrations.py), each with the
# columns that order its rows for the digest.
TABLES: tuple[tuple[str, str], ...] = (
    ("advisors", "id"),
    ("images", "hash"),
    ("portfolio", "advisor_id, image_hash"),
    ("profiles", "advisor_id, image_hash"),
    ("jobs", "id"),
    ("adapters", "advisor_id, version"),
    ("adapter_versions", "advisor_id"),
    ("reviews", "id"),
)
# In SQLite `reviews.id` is the rowid; the other tables get PostgreSQL's `rowid` column.
_OWN_ROWID = {"reviews"}
BATCH = 500


class TargetNotEmpty(MondrianError):
    code = "target_not_empty"
    http_status = 409


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    digest: str  # the same on both sides, else the copy failed


@dataclass
class CopyReport:
    tables: list[TableCopy] = field(default_factory=list)
    images_verified: int = 0
    images_copied: int = 0
    migrations: list[str] = field(default_factory=list)
    adapters: list[AdapterCopy] = field(default_factory=list)  # moved into the shared folder
    adapters_unmoved: int = 0  # without a shared folder: versions whose rows keep their paths
    adapter_roots: list[Path] = field(default_factory=list)  # where those paths point

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def copy_state(
    source: Database, target: PostgresDatabase, images_dir: Path, shared_dir: Path | None = None
) -> CopyReport:
    """Copy every row of `source` into `target` (both open, `target` empty) and verify.

    `images_dir` holds the source's image files; with `shared_dir`, they are copied into
    `shared_dir/images` as well, the folder the replicas will read them from, and each
    adapter version's folder into `shared_dir/adapters/<advisor>/v<N>` (its row's new path)."""
    with source.read() as src:
        src_level = applied(src)
    with target.read() as dst:
        dst_level = applied(dst)
        filled = [t for t, _ in TABLES if dst.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
    if src_level != dst_level:
        raise InvalidInput(
            f"the databases are at different migrations ({len(src_level)} here, "
            f"{len(dst_level)} there); run this version of mondrian on both"
        )
    if filled:
        raise TargetNotEmpty(
            f"the target database is not empty (rows in {', '.join(filled)}); "
            "db copy only fills a new, empty database"
        )
    report = CopyReport(migrations=dst_level)
    report.images_verified, report.images_copied = _verify_images(source, images_dir, shared_dir)
    versions = registered(source)
    moved: dict[tuple[str, int], str] = {}
    if shared_dir is None:
        report.adapters_unmoved, report.adapter_roots = len(versions), unmoved_roots(versions)
    else:
        # Files before rows: the database never names a folder that is not there yet.
        report.adapters = copy_adapters(versions, shared_dir)
        moved = {(c.advisor_id, c.version): str(c.target) for c in report.adapters}
    target.write(_copy_rows, source, moved)
    for table, order in TABLES:
        here, there = _digest(source, table, order, moved), _digest(target, table, order)
        if here != there:
            raise MondrianError(
                f"table {table} differs after the copy ({here[0]} rows here, {there[0]} there)"
            )
        report.tables.append(TableCopy(table, here[0], here[1]))
    return report


def _copy_rows(dst: Any, source: Database, moved: dict[tuple[str, int], str]) -> None:
    with source.read() as src:
        for table, _ in TABLES:
            rowid = "" if table in _OWN_ROWID else "rowid AS rowid, "
            cur = src.execute(f"SELECT {rowid}* FROM {table} ORDER BY rowid")
            names = [d[0] for d in cur.description]
            insert = (
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
            )
            while batch := cur.fetchmany(BATCH):
                dst.executemany(insert, [_moved(table, names, row, moved) for row in batch])
            column = "id" if table in _OWN_ROWID else "rowid"
            dst.execute(reset_identity_sql(table, column))


def _moved(table: str, names: list[str], row: Any, moved: dict[tuple[str, int], str]) -> tuple:
    """The row as copied: an adapter version moved to the shared folder names its new path."""
    values = tuple(row)
    if table != "adapters" or not moved:
        return values
    key = (values[names.index("advisor_id")], values[names.index("version")])
    if key not in moved:
        return values
    at = names.index("path")
    return (*values[:at], moved[key], *values[at + 1 :])


def _digest(
    db: Database | PostgresDatabase,
    table: str,
    order: str,
    moved: dict[tuple[str, int], str] | None = None,
) -> tuple[int, str]:
    """(rows, SHA-256 of the rows' values in key order), rowid left out; `moved`: the
    adapter paths the copy wrote instead of the source's."""
    digest = hashlib.sha256()
    count = 0
    with db.read() as conn:
        cur = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
        names = [d[0] for d in cur.description]
        keep = [i for i, name in enumerate(names) if name != "rowid"]
        for row in cur.fetchall():
            values = _moved(table, names, row, moved or {})
            digest.update(repr([_plain(values[i]) for i in keep]).encode())
            count += 1
    return count, digest.hexdigest()


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def _verify_images(source: Database, images_dir: Path, shared_dir: Path | None) -> tuple[int, int]:
    """Every stored image's file hashes to its name; copied into `shared_dir` (by content,
    never by a user's name) and hashed again there. Returns (verified, copied)."""
    with source.read() as conn:
        rows = conn.execute("SELECT hash, path FROM images ORDER BY hash").fetchall()
    copied = 0
    for row in rows:
        path = Path(images_dir) / row["path"]
        data = path.read_bytes() if path.is_file() else b""
        if content_hash(data) != row["hash"]:
            raise MondrianError(f"image {row['hash']} is missing or damaged at {path}")
        if shared_dir is not None:
            target = Path(shared_dir) / "images" / row["path"]
            if target.resolve() != path.resolve():
                write_atomic(target, data, mode=0o600)  # as storage/images.py files them
                copied += 1
            if content_hash(target.read_bytes()) != row["hash"]:
                raise MondrianError(f"image {row['hash']} did not copy intact to {target}")
    return len(rows), copied
