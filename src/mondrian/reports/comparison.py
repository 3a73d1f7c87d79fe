"""One photo, several advisors: their scores side by side on one page.

`mondrian analyze PHOTO --advisor ansel,fan_ho` runs one critique per advisor; this page
sets them next to each other, a column per advisor: the score per dimension, the overall
score and the grade (each advisor weighs the dimensions its own way, so the same scores
can make different overalls), the highest score in each row marked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mondrian.advisors.model import Advisor
from mondrian.reports.files import add_to_index, job_stem, read_manifest
from mondrian.reports.radar import DIMENSION_LABELS
from mondrian.reports.render import render_page, report_footer
from mondrian.schema import DIMENSIONS, AnalysisResult
from mondrian.staging import write_atomic


def render_comparison(
    photo_name: str,
    critiques: Sequence[tuple[AnalysisResult, Advisor]],
    *,
    generated_at: datetime | None = None,
) -> str:
    """The comparison page of one photo's critiques (at least two, each scored)."""
    if len(critiques) < 2:
        raise ValueError("a comparison needs at least two critiques")
    for result, advisor in critiques:
        if result.advisor_id != advisor.id:
            raise ValueError(f"result is by {result.advisor_id!r}, not {advisor.id!r}")
    columns = [
        {"name": advisor.name, "id": advisor.id, "mode": result.mode_used, "job": result.job_id}
        for result, advisor in critiques
    ]
    rows = []
    for key in DIMENSIONS:
        scores = [result.critique.dimensions.scores()[key] for result, _ in critiques]
        top = max(scores)
        tied = scores.count(top) == len(scores)  # a row all alike marks no one
        cells = [{"value": str(s), "top": s == top and not tied} for s in scores]
        rows.append({"key": key, "label": DIMENSION_LABELS[key], "cells": cells})
    overall = [float(r.critique.overall_score or 0.0) for r, _ in critiques]
    best = max(overall)
    context = {
        "photo": Path(photo_name).name,
        "columns": columns,
        "rows": rows,
        "overall": [{"value": f"{v:.2f}", "top": v == best} for v in overall],
        "grades": [r.critique.overall_grade or "" for r, _ in critiques],
    }
    footer = report_footer(generated_at=generated_at)
    footer["advisors"] = ", ".join(c["id"] for c in columns)
    return render_page("comparison.html", context, footer)


def write_comparison(
    out_dir: Path,
    photo_name: str,
    critiques: Sequence[tuple[AnalysisResult, Advisor]],
    *,
    generated_at: datetime | None = None,
) -> Path:
    """Write the comparison page beside the critiques' own pages (already written by
    files.write_job_reports) and link it from their index entries."""
    out_dir = Path(out_dir)
    html = render_comparison(photo_name, critiques, generated_at=generated_at)
    jobs = [result.job_id for result, _ in critiques]
    entries = {e.job_id: e for e in read_manifest(out_dir) if e.job_id in jobs}
    first = entries.get(jobs[0])
    # Named after the first critique's own pages, beside them.
    if first is not None:
        stem = first.summary.removesuffix("-summary.html")
    else:
        stem = job_stem(out_dir, photo_name, jobs[0] or "")
    path = out_dir / f"{stem}-comparison.html"
    write_atomic(path, html)
    linked = [dataclasses.replace(e, comparison=path.name) for e in entries.values()]
    add_to_index(out_dir, linked)
    return path
