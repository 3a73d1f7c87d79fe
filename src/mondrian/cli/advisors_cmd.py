"""`mondrian advisors list|show|add`."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from mondrian.cli.common import open_db, print_json, read_db, settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("advisors", help="list, show and add advisors")
    commands = parser.add_subparsers(dest="advisors_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="list the advisors")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_advisors)

    show = commands.add_parser("show", help="show one advisor")
    show.add_argument("advisor_id", metavar="ID", help="advisor id (see `mondrian advisors list`)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_advisor)

    add = commands.add_parser("add", help="add or update an advisor from a .json or .toml file")
    add.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="the advisor as a .json or .toml file",
    )
    add.set_defaults(handler=add_advisor)


def list_advisors(args: argparse.Namespace) -> int:
    from mondrian.storage import advisors, images

    with read_db(settings_from(args)) as db, db.read() as conn:
        rows = [
            (a, advisors.is_builtin(conn, a.id), len(images.list_portfolio(conn, a.id)))
            for a in advisors.list_advisors(conn)
        ]
    if args.json:
        print_json([{**a.model_dump(), "builtin": b, "portfolio_images": n} for a, b, n in rows])
        return 0
    width = max((len(a.id) for a, _, _ in rows), default=2)
    print(f"{'ID':<{width}}  {'NAME':<28} {'YEARS':<11} {'PORTFOLIO':>9}  SOURCE")
    for advisor, builtin, count in rows:
        source = "shipped" if builtin else "added"
        print(f"{advisor.id:<{width}}  {advisor.name:<28} {advisor.years:<11} {count:>9}  {source}")
    return 0


def show_advisor(args: argparse.Namespace) -> int:
    from mondrian.storage import advisors

    with read_db(settings_from(args)) as db, db.read() as conn:
        advisor = advisors.require_advisor(conn, args.advisor_id)
    if args.json:
        print_json(advisor.model_dump())
        return 0
    wrap = textwrap.TextWrapper(width=88, initial_indent="  ", subsequent_indent="  ")
    print(f"{advisor.name} ({advisor.years})  [{advisor.id}]\n")
    print("Biography\n" + wrap.fill(advisor.bio) + "\n")
    print("Philosophy\n" + wrap.fill(advisor.philosophy) + "\n")
    print("Signature techniques")
    for technique in advisor.techniques:
        print(f"  - {technique}")
    print("\nWeights")
    for key, weight in advisor.weights.items():
        print(f"  {key:<18} {weight:.2f}")
    print("\nSources")
    for source in advisor.sources:
        print(f"  - {source}")
    return 0


def add_advisor(args: argparse.Namespace) -> int:
    from mondrian.advisors import load_advisor_file
    from mondrian.errors import InvalidInput
    from mondrian.storage import advisors

    advisor = load_advisor_file(args.file)
    with open_db(settings_from(args)) as db:
        with db.read() as conn:
            existing = advisors.get_advisor(conn, advisor.id)
            if existing is not None and advisors.is_builtin(conn, advisor.id):
                raise InvalidInput(
                    f"{advisor.id!r} is a shipped advisor; choose another id for your file"
                )
        db.write(advisors.upsert_advisor, advisor)
    verb = "updated" if existing is not None else "added"
    print(f"{verb} advisor {advisor.id} ({advisor.name})")
    return 0
