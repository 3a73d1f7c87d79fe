"""Reports written per job into one folder, never over an earlier critique, with an index.

A job's pages are named by the photo and the job (`chelsea-3f2a9c1b7d4e-summary.html`), so
analysing the same photo again, or another photo of the same name, adds files beside the
old ones. The folder keeps a manifest (`index.json`) of every critique written into it, and
`index.html` is rendered from it after each write: the one page that links the others. A
photo critiqued by several advisors at once also gets a comparison page (comparison.py).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mondrian.advisors.model import Advisor
from mondrian.reports.render import (
    render_advisor_bio,
    render_detailed,
    render_page,
    render_summary,
    report_footer,
)
from mondrian.reports.thumbnails import ReportImages
from mondrian.schema import AnalysisResult
from mondrian.staging import write_atomic

MANIFEST = "index.json"
INDEX = "index.html"
_ID_CHARS = 12  # of the job's 32 hex digits; the full id when those are taken


@dataclass(frozen=True)
class IndexEntry:
    """One critique in a reports folder, as its manifest holds it (file names are relative
    to the folder)."""

    job_id: str
    photo: str
    advisor_id: str
    advisor_name: str
    mode: str
    score: float
    grade: str
    written_at: str
    summary: str
    detailed: str
    comparison: str | None = None


def photo_slug(photo_name: str) -> str:
    """A file-name-safe form of a photo's name, without its suffix: ASCII letters, digits,
    `-` and `_`, at most 60 characters ("photo" when nothing is left)."""
    stem = Path(photo_name).stem
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_stem).strip("-_")[:60]
    return slug or "photo"


def job_stem(out_dir: Path, photo_name: str, job_id: str) -> str:
    """`<photo>-<job>`: the job's first 12 hex digits, or all 32 if a file already uses those."""
    stem = f"{photo_slug(photo_name)}-{job_id[:_ID_CHARS]}"
    if any(out_dir.glob(f"{stem}-*.html")):
        stem = f"{photo_slug(photo_name)}-{job_id}"
    return stem


def write_job_reports(
    result: AnalysisResult,
    advisor: Advisor,
    out_dir: Path,
    photo_name: str,
    portfolio_means: Mapping[str, float] | None = None,
    *,
    generated_at: datetime | None = None,
    images: ReportImages | None = None,
) -> dict[str, Path]:
    """Write one job's summary and detailed pages (and the advisor's page) into `out_dir`
    and add the job to its index. Returns {"summary", "detailed", "advisor_bio", "index"}."""
    if not result.job_id:
        raise ValueError("a job's reports need the result's job_id")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    when = generated_at or datetime.now(UTC)
    stem = job_stem(out_dir, photo_name, result.job_id)
    # Rendered before anything is written: a rendering error leaves the folder as it was.
    summary = render_summary(result, advisor, portfolio_means, generated_at=when, images=images)
    detailed = render_detailed(result, advisor, portfolio_means, generated_at=when, images=images)
    pages = {
        "summary": (f"{stem}-summary.html", summary),
        "detailed": (f"{stem}-detailed.html", detailed),
        "advisor_bio": (
            f"advisor-{photo_slug(advisor.id)}.html",
            render_advisor_bio(advisor, generated_at=when),
        ),
    }
    paths = {}
    for kind, (name, html) in pages.items():
        write_atomic(out_dir / name, html)
        paths[kind] = out_dir / name
    critique = result.critique
    entry = IndexEntry(
        job_id=result.job_id,
        photo=Path(photo_name).name,
        advisor_id=advisor.id,
        advisor_name=advisor.name,
        mode=result.mode_used,
        score=round(float(critique.overall_score or 0.0), 2),
        grade=critique.overall_grade or "",
        written_at=when.isoformat(timespec="seconds"),
        summary=pages["summary"][0],
        detailed=pages["detailed"][0],
    )
    paths["index"] = add_to_index(out_dir, [entry])
    return paths


def read_manifest(out_dir: Path) -> list[IndexEntry]:
    """The folder's critiques, oldest first; an unreadable manifest counts as none (the
    pages themselves are still there, and the next write starts a new one)."""
    try:
        rows = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
        return [IndexEntry(**row) for row in rows]
    except (OSError, ValueError, TypeError):
        return []


def add_to_index(out_dir: Path, entries: list[IndexEntry]) -> Path:
    """Add (or, for a job already there, replace) entries, then render index.html."""
    out_dir = Path(out_dir)
    new = {e.job_id: e for e in entries}
    kept = [e for e in read_manifest(out_dir) if e.job_id not in new]
    manifest = [*kept, *entries]
    write_atomic(out_dir / MANIFEST, json.dumps([asdict(e) for e in manifest], indent=1))
    return write_index(out_dir, manifest)


def write_index(out_dir: Path, entries: list[IndexEntry]) -> Path:
    rows = [
        {
            **asdict(e),
            "written_at": e.written_at[:16].replace("T", " "),  # minutes are enough here
            "score": f"{e.score:.2f}",
            "grade_band": (e.grade[:1] or "f").lower(),
        }
        for e in reversed(entries)  # newest first
    ]
    html = render_page("index.html", {"rows": rows}, report_footer())
    path = Path(out_dir) / INDEX
    write_atomic(path, html)
    return path
