"""`mondrian analyze IMAGE --advisor ID`: one critique, printed and written as reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mondrian.cli.common import add_model_args, open_db, print_json, settings_from
from mondrian.modes import MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="critique one photo",
        description="Critique one photo in an advisor's voice and write the HTML reports.",
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="a JPEG, PNG or WebP file")
    parser.add_argument(
        "--advisor", required=True, help="advisor id (see `mondrian advisors list`)"
    )
    parser.add_argument(
        "--mode", choices=MODES, help="analysis mode (default: $ANALYSIS_MODE or baseline)"
    )
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    parser.add_argument(
        "--out", type=Path, default=Path("mondrian-reports"), help="folder for the HTML reports"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mondrian.analysis import run_job
    from mondrian.backends.protocol import create_backend
    from mondrian.config import load_settings
    from mondrian.context import Context
    from mondrian.images import read_image_file
    from mondrian.preflight import announce_plan, plan_analysis
    from mondrian.reports.render import write_reports
    from mondrian.reports.thumbnails import report_images
    from mondrian.storage import advisors, images, jobs

    settings = settings_from(args)
    if args.mode:
        settings = load_settings(**{**settings.model_dump(), "analysis_mode": args.mode})
    photo = read_image_file(
        args.image, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
    )
    with open_db(settings) as db:
        announce_plan(plan_analysis(db, args.advisor, settings.analysis_mode))
        with db.read() as conn:
            advisor = advisors.require_advisor(conn, args.advisor)
        backend = create_backend(settings)
        image_hash = db.write(
            images.store_image,
            settings.images_dir,
            photo.data,
            photo.mime,
            photo.width,
            photo.height,
        )
        job = db.write(
            jobs.create_job, advisor.id, image_hash, settings.analysis_mode, backend.model_id
        )
        job = db.write(jobs.start_job, job.id)
        bar = tqdm(
            desc=f"{advisor.name} critiques",
            unit="tok",
            file=sys.stderr,
            disable=args.no_progress or None,
            leave=False,
        )
        ctx = Context(backend=backend, db=db, settings=settings)
        try:
            result = run_job(
                ctx, job, on_token=lambda _row, _step: bar.update(1), policy_applies=False
            )
        except Exception as exc:
            db.write(jobs.fail_job, job.id, str(exc))
            raise
        finally:
            bar.close()
        exemplars = [ref.image_hash for ref in result.references]
        images = report_images(db, settings.images_dir, photo=photo.data, exemplar_hashes=exemplars)
    paths = write_reports(result, advisor, args.out, images=images)
    if args.json:
        print_json(result.model_dump(mode="json"))
    else:
        _print_summary(result, advisor.name)
        print("\nReports:")
        for path in paths.values():
            print(f"  {path}")
    return 0


def _print_summary(result, advisor_name: str) -> None:
    from mondrian.schema import DIMENSION_LABELS

    critique = result.critique
    fallback = (
        ""
        if result.mode_used == result.mode_requested
        else (f" (requested {result.mode_requested})")
    )
    print(
        f"{advisor_name} on this photo — mode {result.mode_used}{fallback}, "
        f"model {result.model.base}"
    )
    print(f"Overall {critique.overall_score:.1f}/10  grade {critique.overall_grade}\n")
    print(critique.image_description + "\n")
    for key, dim in critique.dimensions.items():
        print(f"  {DIMENSION_LABELS[key]:<22} {dim.score:>2}/10  {dim.comment}")
