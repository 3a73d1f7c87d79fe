"""`mondrian analyze PHOTO... --advisor ID[,ID...]`: critiques, printed and written as reports.

Photos are files or folders (searched recursively for image files). Everything that can be
checked without the model is checked first: the paths, the advisors, that a folder holds
photos. Each critique is a job; its reports are named by the photo and the job
(reports/files.py), so nothing earlier in `--out` is overwritten, and `index.html` links
them all. Several advisors on one photo also write a comparison page (reports/comparison.py).
With several photos, one that cannot be read is reported on its line and the rest go on;
the exit status is then 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mondrian.cli.common import add_model_args, open_db, print_json, settings_from
from mondrian.errors import InvalidInput, MondrianError
from mondrian.modes import MODES

if TYPE_CHECKING:
    from mondrian.advisors import Advisor
    from mondrian.config import Settings
    from mondrian.context import Context
    from mondrian.images import Photo
    from mondrian.schema import AnalysisResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="critique photos",
        description="Critique photos in one or more advisors' voices and write the HTML "
        "reports (one set per critique, an index page, and a comparison page per photo when "
        "several advisors critique it).",
    )
    parser.add_argument(
        "photos",
        type=Path,
        nargs="+",
        metavar="PHOTO",
        help="photo files (JPEG, PNG, WebP, HEIC, RAW, ...) or folders, searched recursively",
    )
    parser.add_argument(
        "--advisor",
        required=True,
        help="advisor id, or several separated by commas (see `mondrian advisors list`)",
    )
    parser.add_argument(
        "--mode", choices=MODES, help="analysis mode (default: $ANALYSIS_MODE or baseline)"
    )
    add_model_args(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the analysis as JSON (a list when there are several critiques)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("mondrian-reports"),
        help="folder for the HTML reports (default: mondrian-reports)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--xmp",
        action="store_true",
        help="write each photo's star rating (from its overall score, docs/xmp.md) to XMP "
        "sidecars beside it, PHOTO.ext.xmp and PHOTO.xmp; the photo itself is never written",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --xmp: replace a rating a sidecar already holds (the rest is kept)",
    )
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Critiqued:
    """One critique done: what the summary lines and the JSON print."""

    photo: Path
    result: AnalysisResult
    advisor: Advisor
    reports: dict[str, Path]


def collect_photos(paths: Iterable[Path]) -> list[Path]:
    """The photo files named, folders expanded (recursively, image suffixes only, hidden
    entries skipped), in order and each once; InvalidInput for a missing path or an empty
    folder."""
    from mondrian.images import IMAGE_SUFFIXES

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise InvalidInput(f"no photos in {path}", code="no_photos")
            found += inside
        elif path.exists():
            found.append(path)
        else:
            raise InvalidInput(f"no such file: {path}", code="file_not_found")
    unique: dict[Path, None] = dict.fromkeys(p.resolve() for p in found)
    return list(unique)


def advisor_ids(value: str) -> list[str]:
    ids = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not ids:
        raise InvalidInput("--advisor needs at least one advisor id", code="no_advisor")
    return ids


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mondrian.backends.protocol import create_backend
    from mondrian.config import load_settings
    from mondrian.context import Context
    from mondrian.preflight import announce_plan, plan_analysis
    from mondrian.storage import advisors

    settings = settings_from(args)
    if args.mode:
        settings = load_settings(**{**settings.model_dump(), "analysis_mode": args.mode})
    if args.force and not args.xmp:
        raise InvalidInput("--force goes with --xmp (it lets a sidecar's rating be replaced)")
    photos = collect_photos(args.photos)
    many = len(photos) > 1
    with open_db(settings) as db:
        # Several photos are one shoot: a batch groups their jobs (storage/batches.py).
        batch_id = _new_batch(db) if many else None
        for advisor_id in advisor_ids(args.advisor):
            announce_plan(plan_analysis(db, advisor_id, settings.analysis_mode))
        with db.read() as conn:
            chosen = [advisors.require_advisor(conn, i) for i in advisor_ids(args.advisor)]
        # One photo: a bad one is the command's error, found before the model loads.
        first = None if many else _read(photos[0], settings)
        ctx = Context(backend=create_backend(settings), db=db, settings=settings)
        bar = tqdm(
            total=len(photos) * len(chosen),
            desc="critiques",
            unit="critique",
            file=sys.stderr,
            disable=args.no_progress or None,
            leave=False,
        )
        done: list[Critiqued] = []
        failed = unrated = 0
        try:
            for photo in photos:
                try:
                    batch = _critique_photo(ctx, photo, chosen, args.out, bar, first, batch_id)
                except MondrianError as exc:
                    if not many:
                        raise
                    failed += 1
                    bar.update(len(chosen))
                    tqdm.write(f"skipped {exc.message}", file=sys.stderr)
                    continue
                done += batch
                if args.xmp and not _write_xmp(photo, batch, args.force):
                    unrated += 1
                if many and not args.json:
                    tqdm.write(_photo_line(batch))
        finally:
            bar.close()
    _print(done, args.json, args.out)
    if failed:
        print(f"mondrian: {failed} of {len(photos)} photos could not be read", file=sys.stderr)
    if unrated:
        print(f"mondrian: {unrated} photo(s) got no sidecar (see above)", file=sys.stderr)
    return 2 if failed or unrated else 0


def _read(path: Path, settings: Settings) -> Photo:
    from mondrian.images import read_image_file

    return read_image_file(
        path, max_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels
    )


def _new_batch(db) -> str:
    from mondrian.storage import batches

    return db.write(batches.create_batch, "cli").id


def _write_xmp(photo: Path, batch: list[Critiqued], force: bool) -> bool:
    """The photo's rating into its sidecars (reports/xmp.py); False, said on stderr, where
    a sidecar refused it: the critiques stand either way."""
    from tqdm import tqdm

    from mondrian.reports import xmp

    scores = [c.result.critique.overall_score for c in batch]
    rating = xmp.rating_of([s for s in scores if s is not None], [c.advisor.id for c in batch])
    try:
        written = xmp.write_sidecars(photo, rating, force=force)
    except MondrianError as exc:
        print(f"mondrian: no sidecar for {photo.name}: {exc.message}", file=sys.stderr)
        return False
    for path in written:
        tqdm.write(f"{path}: {rating.stars} star(s)", file=sys.stderr)
    return True


def _critique_photo(
    ctx: Context,
    path: Path,
    chosen: list[Advisor],
    out: Path,
    bar,
    photo: Photo | None,
    batch_id: str | None = None,
) -> list[Critiqued]:
    """Every chosen advisor's critique of one photo, each a job with its own reports."""
    from mondrian.reports.comparison import write_comparison

    photo = photo or _read(path, ctx.settings)
    image_hash = _store(ctx, photo)
    batch = []
    for advisor in chosen:
        bar.set_description(f"{path.name} · {advisor.name}")
        exif = photo.exif.as_dict()
        result = _run_one(ctx, advisor, image_hash, path, exif, _ticker(bar), batch_id)
        reports = _write(ctx, result, advisor, out, path, photo)
        batch.append(Critiqued(path, result, advisor, reports))
        bar.update(1)
    if len(batch) > 1:
        comparison = write_comparison(out, path.name, [(c.result, c.advisor) for c in batch])
        for c in batch:
            c.reports["comparison"] = comparison
    return batch


def _store(ctx: Context, photo: Photo) -> str:
    from mondrian.storage import images

    settings = ctx.settings
    return ctx.db.write(
        images.store_image, settings.images_dir, photo.data, photo.mime, photo.width, photo.height
    )


def _run_one(
    ctx: Context,
    advisor: Advisor,
    image_hash: str,
    path: Path,
    exif: dict[str, str | int],
    on_token: Callable[[int, int], None],
    batch_id: str | None = None,
) -> AnalysisResult:
    from mondrian.analysis import run_job
    from mondrian.storage import jobs

    db, settings = ctx.db, ctx.settings
    job = db.write(
        jobs.create_job,
        advisor.id,
        image_hash,
        settings.analysis_mode,
        ctx.backend.model_id,
        photo_name=path.name,
        exif=exif,
        batch_id=batch_id,
    )
    job = db.write(jobs.start_job, job.id)
    try:
        return run_job(ctx, job, on_token=on_token, policy_applies=False)
    except Exception as exc:
        db.write(jobs.fail_job, job.id, str(exc))
        raise


def _write(
    ctx: Context, result: AnalysisResult, advisor: Advisor, out: Path, path: Path, photo: Photo
) -> dict[str, Path]:
    from mondrian.reports.files import write_job_reports
    from mondrian.reports.thumbnails import report_images
    from mondrian.storage import jobs

    exemplars = [ref.image_hash for ref in result.references]
    images = report_images(
        ctx.db, ctx.settings.images_dir, photo=photo.data, exemplar_hashes=exemplars
    )
    paths = write_job_reports(result, advisor, out, path.name, images=images)
    ctx.db.write(jobs.set_report_path, result.job_id, str(paths["summary"].resolve()))
    return paths


def _ticker(bar) -> Callable[[int, int], None]:
    """Tokens shown beside the bar, every 16th (a postfix redraw per token costs more)."""
    count = [0]

    def tick(_row: int, _step: int) -> None:
        count[0] += 1
        if count[0] % 16 == 0:
            bar.set_postfix_str(f"{count[0]} tok", refresh=True)

    return tick


def _photo_line(batch: list[Critiqued]) -> str:
    scores = "  ".join(
        f"{c.advisor.name} {c.result.critique.overall_score:.1f} {c.result.critique.overall_grade}"
        + _checks_note(c.result)
        for c in batch
    )
    main = batch[0].reports.get("comparison") or batch[0].reports["summary"]
    return f"{batch[0].photo.name}: {scores}  -> {main}"


def _checks_note(result: AnalysisResult) -> str:
    count = len(result.checks)
    return f" ({count} {'check' if count == 1 else 'checks'})" if count else ""


def _print(done: list[Critiqued], as_json: bool, out: Path) -> None:
    if as_json:
        results = [c.result.model_dump(mode="json") for c in done]
        print_json(results[0] if len(results) == 1 else results)
        return
    if len(done) == 1:
        _print_summary(done[0].result, done[0].advisor.name)
        print("\nReports:")
        for path in done[0].reports.values():
            print(f"  {path}")
        return
    if len({c.photo for c in done}) == 1:  # one photo, several advisors: the lines again
        print(_photo_line(done))
    print(f"\n{len(done)} critiques; index: {out / 'index.html'}")


def _print_summary(result: AnalysisResult, advisor_name: str) -> None:
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
    print(f"Overall {critique.overall_score:.1f}/10  grade {critique.overall_grade}")
    # The checks right under the verdict they qualify: where the critique contradicts a
    # measurement of the photo (facts/checks.py). They never change the scores.
    for check in result.checks:
        print(f"  check: {check.message}")
    print()
    print(critique.image_description + "\n")
    for key, dim in critique.dimensions.items():
        print(f"  {DIMENSION_LABELS[key]:<22} {dim.score:>2}/10  {dim.comment}")
