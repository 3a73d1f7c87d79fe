"""`mondrian advisors list|show|new|add`."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from mondrian.cli.common import open_db, print_json, read_db, settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("advisors", help="list, show, write (new) and add advisors")
    commands = parser.add_subparsers(dest="advisors_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="list the advisors")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_advisors)

    show = commands.add_parser("show", help="show one advisor")
    show.add_argument("advisor_id", metavar="ID", help="advisor id (see `mondrian advisors list`)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_advisor)

    new = commands.add_parser(
        "new",
        help="write a commented advisor template to fill in",
        description="Write a TOML advisor file with every field, its help and placeholders; "
        "fill in the placeholders, then `mondrian advisors add FILE`.",
    )
    new.add_argument("advisor_id", metavar="ID", help="the new advisor's id (a-z, 0-9, _ or -)")
    new.add_argument(
        "--out", metavar="FILE", help="where to write it; '-' prints it (default: ./ID.toml)"
    )
    new.set_defaults(handler=new_advisor)

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


def new_advisor(args: argparse.Namespace) -> int:
    import re
    import sys

    from mondrian.advisors.model import ADVISOR_ID_PATTERN
    from mondrian.advisors.template import advisor_template
    from mondrian.errors import InvalidInput

    if not re.fullmatch(ADVISOR_ID_PATTERN, args.advisor_id):
        raise InvalidInput(
            f"invalid advisor id {args.advisor_id[:80]!r}: use 1-64 of a-z, 0-9, _ and -"
        )
    text = advisor_template(args.advisor_id)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.out) if args.out else Path(f"{args.advisor_id}.toml")
    if path.exists():
        raise InvalidInput(f"{path} exists; choose another file with --out")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path}: fill in its placeholders, then `mondrian advisors add {path}`")
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
