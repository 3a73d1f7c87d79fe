"""`mondrian ab-report`: compare the base and fine_tuned variants over the recorded jobs."""

from __future__ import annotations

import argparse

from mondrian.cli.common import print_json, read_db, settings_from

DEFAULT_WINDOW = 10_000


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ab-report",
        help="compare model variants (A/B) over recorded jobs",
        description=(
            "Per variant (base, fine_tuned): jobs, latency p50/p95, mean overall score and "
            "schema-valid rate (jobs whose stored critique validates against the schema, over "
            "done + failed), from the jobs the service recorded."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_WINDOW,
        help=f"compare the latest N jobs (default {DEFAULT_WINDOW})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mondrian.service.abreport import compare_variants, format_report
    from mondrian.storage import jobs

    with read_db(settings_from(args)) as db, db.read() as conn:
        recent = jobs.list_jobs(conn, limit=args.limit)
    report = compare_variants(recent)
    if args.json:
        print_json(report.model_dump(mode="json"))
    else:
        print(format_report(report))
    return 0
