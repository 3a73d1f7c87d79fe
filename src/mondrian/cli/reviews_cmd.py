"""`mondrian reviews list|accept|reject`: the operator's say over which reviews train.

A review posted over HTTP is pending until an operator accepts it (or it came with a
trusted token); only accepted reviews are used by `dataset build --include-reviews`.
"""

from __future__ import annotations

import argparse
import getpass

from mondrian.cli.common import print_json, read_db, settings_from
from mondrian.errors import NotFound
from mondrian.storage import reviews
from mondrian.storage.bootstrap import open_existing_state
from mondrian.storage.reviews import STATUSES, Review


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reviews",
        help="reviews posted to the service: accept them as training data or reject them",
    )
    commands = parser.add_subparsers(dest="reviews_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="list reviews, oldest first")
    listing.add_argument("--status", choices=STATUSES, help="only reviews in this state")
    listing.add_argument("--advisor", help="only this advisor's reviews")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_command)

    for action, status, text in (
        ("accept", "accepted", "use these reviews as training data"),
        ("reject", "rejected", "never use these reviews as training data"),
    ):
        command = commands.add_parser(action, help=text)
        command.add_argument(
            "ids", type=int, nargs="+", metavar="ID", help="review ids (see `reviews list`)"
        )
        command.set_defaults(handler=decide_command, status=status)


def _row(review: Review) -> dict[str, object]:
    return {
        "id": review.id,
        "job_id": review.job_id,
        "advisor_id": review.advisor_id,
        "status": review.status,
        "author": review.author,
        "reviewer": review.reviewer,
        "overall_score": review.critique.overall_score,
        "created_at": review.created_at,
        "decided_by": review.decided_by,
    }


def list_command(args: argparse.Namespace) -> int:
    with read_db(settings_from(args)) as db, db.read() as conn:
        found = reviews.list_reviews(conn, advisor_id=args.advisor, status=args.status)
    rows = [_row(r) for r in found]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no reviews" + (f" {args.status}" if args.status else ""))
        return 0
    print("ID      STATUS    ADVISOR          AUTHOR                CREATED")
    for r in rows:
        print(
            f"{r['id']:<6}  {r['status']:<8}  {r['advisor_id']:<15}  "
            f"{r['author'] or '-'!s:<20}  {str(r['created_at'])[:19]}"
        )
    return 0


def decide_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    db = open_existing_state(settings)
    if db is None:
        raise NotFound(f"no reviews yet (no Mondrian state at {settings.home_dir})")
    by = f"cli:{getpass.getuser()}"
    with db:
        # All or none: an unknown id leaves every listed review as it was.
        with db.read() as conn:
            missing = [i for i in args.ids if reviews.get_review(conn, i) is None]
        if missing:
            raise NotFound(f"no review {', '.join(map(str, missing))}")
        for review_id in args.ids:
            db.write(reviews.decide_review, review_id, args.status, by)
    print(f"{len(args.ids)} review(s) {args.status}")
    return 0
