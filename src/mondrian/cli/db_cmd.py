"""`mondrian db migrate|check|copy`: the state's database, SQLite or PostgreSQL.

`migrate` applies pending migrations (a server does it at start too; replicas that start
together apply each one once). `check` connects and reports the migration level without
changing anything: exit 0 when up to date, 1 when migrations are pending or the database
was written by a newer Mondrian. `copy --to URL` moves the SQLite state under
MONDRIAN_HOME into an empty PostgreSQL database, verified (storage/copy.py); with
`--shared-dir` the image files and the adapter versions' folders move into that folder too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mondrian.cli.common import settings_from
from mondrian.config import Settings
from mondrian.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from mondrian.storage.copy import CopyReport


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db", help="the state's database: migrate, check, copy SQLite to PostgreSQL"
    )
    commands = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    migrate = commands.add_parser("migrate", help="apply pending migrations")
    migrate.set_defaults(handler=migrate_command)

    check = commands.add_parser(
        "check", help="connect and report the migration level (exit 1 if not up to date)"
    )
    check.set_defaults(handler=check_command)

    copy = commands.add_parser(
        "copy",
        help="copy the SQLite state under MONDRIAN_HOME into an empty PostgreSQL, verified",
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="the target, postgresql://user@host/db"
    )
    copy.add_argument(
        "--shared-dir",
        type=Path,
        metavar="DIR",
        help="also copy the image files into DIR/images and the adapter versions into "
        "DIR/adapters, the rows naming them there (the replicas' MONDRIAN_SHARED_DIR)",
    )
    copy.set_defaults(handler=copy_command)


def _where(settings: Settings) -> str:
    from mondrian.storage.bootstrap import database_url
    from mondrian.storage.dialect import redact_url

    url = database_url(settings)
    return str(settings.db_path) if url is None else redact_url(url)


def migrate_command(args: argparse.Namespace) -> int:
    from mondrian.storage.levels import read_level
    from mondrian.storage.migrations import MIGRATIONS

    settings = settings_from(args)
    before = read_level(settings)
    from mondrian.storage.bootstrap import open_state

    with open_state(settings):
        pass
    ran = [m.name for m in MIGRATIONS if m.name not in (before.applied if before else [])]
    where = _where(settings)
    if ran:
        print(f"{where}: applied {len(ran)} migration(s): {', '.join(ran)}")
    else:
        print(f"{where}: up to date ({MIGRATIONS[-1].name})")
    return 0


def check_command(args: argparse.Namespace) -> int:
    from mondrian.storage.levels import read_level

    settings = settings_from(args)
    level = read_level(settings)
    where = _where(settings)
    if level is None:
        print(f"{where}: no database yet (`mondrian db migrate` creates it)")
        return 1
    print(f"{where}: reachable, {level.server}")
    print(f"migrations: {len(level.applied)} applied of {level.known} known", end="")
    print(f" (latest {level.applied[-1]})" if level.applied else "")
    if level.unknown:
        print(f"written by a newer Mondrian: {', '.join(level.unknown)}")
        return 1
    if level.pending:
        print(f"pending: {', '.join(level.pending)} (run `mondrian db migrate`)")
        return 1
    return 0


def copy_command(args: argparse.Namespace) -> int:
    from mondrian.storage.copy import copy_state
    from mondrian.storage.db import Database
    from mondrian.storage.dialect import is_postgres_url, redact_url
    from mondrian.storage.postgres import PostgresDatabase

    settings = settings_from(args)
    url = args.to.strip()
    if not is_postgres_url(url):
        raise InvalidInput(f"--to must be a postgresql:// URL, got {redact_url(url)!r}")
    if not settings.db_path.is_file():
        raise NotFound(f"no SQLite state to copy at {settings.db_path}")
    started = time.perf_counter()
    with Database(settings.db_path) as source, PostgresDatabase(url) as target:
        report = copy_state(source, target, settings.images_dir, args.shared_dir)
    seconds = time.perf_counter() - started
    print(f"copied {settings.db_path} -> {redact_url(url)} ({len(report.migrations)} migrations)")
    for table in report.tables:
        print(f"  {table.table:<17} {table.rows:>7} rows  verified (sha256 {table.digest[:12]})")
    copied = f", {report.images_copied} copied to {args.shared_dir}" if args.shared_dir else ""
    print(f"  images: {report.images_verified} files hash to their names{copied}")
    _print_adapters(report)
    shared = f" and MONDRIAN_SHARED_DIR={args.shared_dir}" if args.shared_dir else ""
    print(
        f"{report.rows} rows in {seconds:.1f} s; set MONDRIAN_DATABASE_URL{shared} to serve from it"
    )
    return 0


def _print_adapters(report: CopyReport) -> None:
    if report.adapters:
        print(f"  adapters: {len(report.adapters)} versions, every file's sha256 equal, verified")
        for moved in report.adapters:
            print(f"    {moved.ref:<20} {moved.files:>3} files {moved.action} -> {moved.target}")
    elif report.adapters_unmoved:
        roots = ", ".join(str(root) for root in report.adapter_roots)
        print(
            f"  adapters: {report.adapters_unmoved} versions not moved: their rows still point "
            f"into {roots}; every replica must see it at that path (or copy with --shared-dir)"
        )
    else:
        print("  adapters: none registered")
