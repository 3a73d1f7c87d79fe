"""`mondrian delete JOB`: forget one past critique (the studio's delete button and
`DELETE /jobs/{id}` do the same, storage/jobs.delete_job). Its photo goes too when no other
job, portfolio, profile or review uses it; a job with reviews is kept (they are training
data), and so is one still queued or running."""

from __future__ import annotations

import argparse

from mondrian.cli.common import open_db, print_json, settings_from


def register_delete(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "delete",
        help="delete a past critique",
        description="Delete a finished critique from the history; its stored photo is "
        "removed when nothing else uses it. Report files written by `analyze --out` stay.",
    )
    parser.add_argument(
        "job", metavar="JOB", help="job id, or its first 6 or more hex digits (see history)"
    )
    parser.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    parser.set_defaults(handler=run_delete)


def run_delete(args: argparse.Namespace) -> int:
    from mondrian.storage import jobs
    from mondrian.storage.job_pages import resolve_job

    settings = settings_from(args)
    with open_db(settings) as db:
        with db.read() as conn:
            job = resolve_job(conn, args.job)
        deleted = db.write(jobs.delete_job, settings.images_dir, job.id)
    if args.json:
        print_json({"deleted": job.id, "photo_removed": deleted.photo_removed})
        return 0
    photo = job.photo_name or job.image_hash[:12]
    kept = "removed" if deleted.photo_removed else "kept: something else uses it"
    print(f"deleted job {job.id} ({photo}, {job.advisor_id}); its photo {kept}")
    return 0
