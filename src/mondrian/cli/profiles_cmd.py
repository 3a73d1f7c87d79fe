"""`mondrian profiles export|import --advisor ID FILE`: curate portfolio profiles as JSONL."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from mondrian.cli.common import open_db, read_db, settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="export and import portfolio profiles (JSONL) for curation",
        description=(
            "Portfolio profiles are the 8-dimension critiques RAG retrieves by. Export them "
            "as JSON lines, correct scores and comments, and import them back: every row is "
            "validated against the critique schema, and one invalid row means nothing is "
            "imported. Imported rows are marked curated."
        ),
    )
    commands = parser.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)

    export = commands.add_parser("export", help="write an advisor's profiles as JSONL")
    export.add_argument("--advisor", required=True, help="advisor id")
    export.add_argument("file", type=Path, metavar="FILE", help="output file ('-' for stdout)")
    export.set_defaults(handler=export_command)

    imp = commands.add_parser("import", help="read curated profiles from JSONL")
    imp.add_argument("--advisor", required=True, help="advisor id")
    imp.add_argument("file", type=Path, metavar="FILE", help="input file ('-' for stdin)")
    imp.set_defaults(handler=import_command)


def export_command(args: argparse.Namespace) -> int:
    from mondrian.portfolio.profiles_io import export_profiles
    from mondrian.storage import advisors

    with read_db(settings_from(args)) as db:
        with db.read() as conn:
            advisor = advisors.require_advisor(conn, args.advisor)
        if str(args.file) == "-":
            count = export_profiles(db, advisor.id, sys.stdout)
        else:
            count = _export_atomic(db, advisor.id, args.file)
    if str(args.file) != "-":
        print(f"exported {count} profile(s) of {advisor.id} to {args.file}")
    return 0


def _export_atomic(db, advisor_id: str, target: Path) -> int:
    """Write beside the target and rename, so a failed export leaves no half file."""
    from mondrian.portfolio.profiles_io import export_profiles

    target = target.expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            count = export_profiles(db, advisor_id, out)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return count


def import_command(args: argparse.Namespace) -> int:
    from mondrian.errors import InvalidInput
    from mondrian.portfolio.profiles_io import import_profiles
    from mondrian.storage import advisors

    if str(args.file) == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = args.file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise InvalidInput(f"no such file: {args.file}", code="file_not_found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {args.file}: {exc}", code="unreadable") from None
    with open_db(settings_from(args)) as db:
        with db.read() as conn:
            advisor = advisors.require_advisor(conn, args.advisor)
        report = import_profiles(db, advisor.id, lines)
    print(
        f"imported {report.imported} profile(s) for {advisor.id} as curated "
        f"({report.created} new, {report.replaced} replaced)"
    )
    return 0
