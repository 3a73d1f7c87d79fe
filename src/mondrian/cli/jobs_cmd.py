"""`mondrian history` (past critiques, newest first) and `mondrian export JOB` (one as
Markdown or PDF). Both only read the state: on a fresh machine they create nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mondrian.cli.common import print_json, read_db, settings_from
from mondrian.errors import InvalidInput

if TYPE_CHECKING:
    from mondrian.storage.jobs import Job

EXPORT_FORMATS = ("md", "pdf")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError(f"must be between 1 and 500, got {value}")
    return value


def register_history(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "history",
        help="list past critiques",
        description="List past critiques, newest first: time, photo, advisor, mode used, "
        "score and report.",
    )
    parser.add_argument(
        "--limit", type=_positive, default=20, help="how many to list, 1 to 500 (default: 20)"
    )
    parser.add_argument("--advisor", help="only this advisor's critiques (default: all)")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(handler=run_history)


def register_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a critique as Markdown or PDF",
        description="Write a finished critique as Markdown or as PDF (the photo, the scores "
        "and the words).",
    )
    parser.add_argument(
        "job", metavar="JOB", help="job id, or its first 6 or more hex digits (see history)"
    )
    parser.add_argument(
        "--format", choices=EXPORT_FORMATS, default="md", help="md or pdf (default: md)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="file to write; - for standard output (default: <photo>-<job>.md|pdf here)",
    )
    parser.set_defaults(handler=run_export)


def history_row(job: Job) -> dict[str, Any]:
    result = job.result or {}
    critique = result.get("critique", {})
    return {
        "id": job.id,
        "created_at": job.created_at,
        "photo": job.photo_name or job.image_hash[:12],
        "advisor_id": job.advisor_id,
        "status": job.status,
        "mode_requested": job.mode_requested,
        "mode_used": job.mode_used,
        "score": job.score,
        "grade": critique.get("overall_grade"),
        "report_path": job.report_path,
        "exif": job.exif,
    }


def run_history(args: argparse.Namespace) -> int:
    from mondrian.storage.job_pages import page_jobs

    with read_db(settings_from(args)) as db, db.read() as conn:
        jobs = page_jobs(conn, limit=args.limit, advisor_id=args.advisor).jobs
    rows = [history_row(job) for job in jobs]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no critiques yet; `mondrian analyze PHOTO --advisor ID` makes one")
        return 0
    heads = ("time", "job", "photo", "advisor", "mode", "score", "report")
    table = [
        (
            row["created_at"][:19].replace("T", " "),
            row["id"][:12],
            row["photo"],
            row["advisor_id"],
            row["mode_used"] or row["status"],
            "-" if row["score"] is None else f"{row['score']:.2f} {row['grade']}",
            row["report_path"] or "-",
        )
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(heads, *table, strict=True)]
    for line in (heads, *table):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mondrian.images import read_image_file
    from mondrian.reports.files import photo_slug
    from mondrian.reports.markdown import ExportFacts, render_markdown
    from mondrian.storage import advisors, images
    from mondrian.storage.job_pages import resolve_job

    settings = settings_from(args)
    with read_db(settings) as db, db.read() as conn:
        job = resolve_job(conn, args.job)
        result = job.analysis()
        if job.status != "done" or result is None:
            detail = f": {job.error}" if job.error else ""
            raise InvalidInput(f"job {job.id} is {job.status}{detail}; only a done one exports")
        advisor = advisors.require_advisor(conn, job.advisor_id)
        path = images.image_path(conn, settings.images_dir, job.image_hash)
    photo_name = job.photo_name or f"photo {job.image_hash[:12]}"
    facts = ExportFacts(job.id, photo_name, job.created_at, job.exif)
    if args.format == "md":
        data = render_markdown(result, advisor, facts).encode()
    else:
        from mondrian.reports.pdf import render_pdf

        photo = read_image_file(
            path, max_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels
        )
        data = render_pdf(result, advisor, facts, photo.image)
    out = args.out or Path(f"{photo_slug(photo_name)}-{job.id[:12]}.{args.format}")
    if str(out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    from mondrian.staging import write_atomic

    write_atomic(out, data)
    print(out)
    return 0
