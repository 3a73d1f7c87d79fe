"""The advisor's portfolio from the command line: `mondrian index --advisor ID PATH...`
profiles photos for RAG; `mondrian profiles export|import --advisor ID FILE` curates those
profiles as JSONL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mondrian.cli.common import add_model_args, open_db, read_db, settings_from


def register_index(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="add photos to an advisor's portfolio and profile them",
        description=(
            "Store each image (by content hash), add it to the advisor's portfolio, and "
            "profile it with the model on the 8 dimensions, with an image embedding, for "
            "the rag mode. Images already profiled for the advisor are skipped, so an "
            "interrupted run resumes where it stopped. Unreadable files are reported and "
            "skipped."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files or folders (recursive)"
    )
    parser.add_argument(
        "--advisor", required=True, help="advisor id (see `mondrian advisors list`)"
    )
    add_model_args(parser)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per model call (default 4)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=index_command)


def index_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mondrian.backends.protocol import create_backend
    from mondrian.context import Context
    from mondrian.errors import InvalidInput
    from mondrian.portfolio.indexing import (
        DEFAULT_BATCH_SIZE,
        IndexEvent,
        IndexReport,
        collect_files,
        index_paths,
        pending_files,
    )
    from mondrian.preflight import check_index_files
    from mondrian.storage import advisors

    batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise InvalidInput("--batch-size must be at least 1")
    settings = settings_from(args)
    files = collect_files(args.paths)
    if not files:
        raise InvalidInput("no image files found under the given paths", code="no_images")
    check_index_files(files)
    with open_db(settings) as db:
        with db.read() as conn:
            advisor = advisors.require_advisor(conn, args.advisor)
        if not pending_files(db, advisor.id, files):
            # Everything is indexed already: no need to load a model to say so.
            report = IndexReport(skipped=list(files))
        else:
            backend = create_backend(settings)
            bar = tqdm(
                total=len(files),
                desc=f"indexing for {advisor.id}",
                unit="img",
                file=sys.stderr,
                disable=args.no_progress or None,
            )

            def progress(event: IndexEvent) -> None:
                bar.update(1)
                if event.status != "indexed":
                    bar.set_postfix_str(f"{event.status}: {event.path.name}", refresh=False)

            try:
                report = index_paths(
                    Context(backend=backend, db=db, settings=settings),
                    advisor,
                    files,
                    progress,
                    batch_size=batch_size,
                )
            finally:
                bar.close()
    _print_report(report, advisor.id)
    return 0 if report.readable else 2


def _print_report(report, advisor_id: str) -> None:
    print(
        f"{advisor_id}: indexed {len(report.indexed)}, "
        f"skipped {len(report.skipped)} already indexed, "
        f"{len(report.unreadable)} unreadable"
        + (f", {len(report.failed)} failed" if report.failed else "")
    )
    for path, message in report.unreadable:
        print(f"  unreadable: {path}: {_without_path(message, path)}")
    for path, message in report.failed:
        print(f"  failed: {path}: {message}")


def _without_path(message: str, path: Path) -> str:
    # read_image_file prefixes its messages with the path; it is printed once already.
    return message.removeprefix(f"{path}: ")


def register_profiles(subparsers: argparse._SubParsersAction) -> None:
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
    """Exported whole or not at all: a failed export leaves no half file."""
    import io

    from mondrian.portfolio.profiles_io import export_profiles
    from mondrian.staging import write_atomic

    buffer = io.StringIO()
    count = export_profiles(db, advisor_id, buffer)
    write_atomic(target.expanduser(), buffer.getvalue())
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
