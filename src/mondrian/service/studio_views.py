"""What the studio's critique and comparison pages show, as plain dicts for the templates
in templates/studio/ (service/routes/studio.py serves them).

The pieces come from reports/: the radar (radar.py), the measured facts and the checks
(facts_view.py), the thumbnails (thumbnails.py); the studio renders them with its own
templates. Exemplars are shown through `GET /studio/jobs/{id}/exemplars/{n}`, by their
place in the job's result: no path, no hash from the request reaches the image store.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from statistics import fmean
from typing import Any

from markupsafe import Markup

from mondrian.advisors import Advisor
from mondrian.errors import NotFound
from mondrian.reports.markdown import ExportFacts
from mondrian.reports.radar import DIMENSION_LABELS, radar_svg
from mondrian.reports.thumbnails import report_images
from mondrian.schema import DIMENSIONS, AnalysisResult, Critique
from mondrian.storage.db import Database
from mondrian.storage.jobs import Job, job_from_row

EXEMPLAR_SIDE = 320  # twice the 160 CSS pixels shown: sharp on a high-density screen
COMPARE_COLUMNS = 8  # the most critiques one comparison sets side by side
_SAME_PHOTO = "SELECT * FROM jobs WHERE image_hash = ? ORDER BY created_at DESC, id DESC LIMIT ?"


def scored(result: AnalysisResult, advisor: Advisor) -> Critique:
    """The critique with its overall score and grade (older results may lack them)."""
    critique = result.critique
    if critique.overall_score is None or critique.overall_grade is None:
        critique = critique.scored(advisor.weights)
    return critique


def dimension_rows(result: AnalysisResult) -> list[dict[str, Any]]:
    dims = dict(result.critique.dimensions)  # a pydantic model iterates as (field, value)
    rows = []
    for key in DIMENSIONS:
        dim = dims[key]
        rows.append(
            {
                "key": key,
                "label": DIMENSION_LABELS[key],
                "score": dim.score,
                "expected": None if dim.expected_score is None else f"{dim.expected_score:.1f}",
                "comment": dim.comment,
                "recommendation": dim.recommendation,
            }
        )
    return rows


def radar(critique: Critique, means: Mapping[str, float] | None, size: int = 360) -> Markup:
    """The eight scores as an inline SVG; the advisor's portfolio means as the dashed
    reference where a portfolio is indexed."""
    return radar_svg(critique.dimensions.scores(), means, size=size)


def exemplar_rows(job: Job, result: AnalysisResult) -> list[dict[str, Any]]:
    """The RAG exemplars, in the order retrieval ranked them, each with its scores."""
    rows = []
    for index, ref in enumerate(result.references):
        scores = [
            (DIMENSION_LABELS[key], ref.scores[key]) for key in DIMENSIONS if key in ref.scores
        ]
        rows.append(
            {
                "index": index,
                "src": f"/studio/jobs/{job.id}/exemplars/{index}",
                "title": ref.title or f"Portfolio photo {ref.image_hash[:12]}",
                "similarity": f"{ref.similarity:.2f}",
                "mean": f"{fmean(s for _, s in scores):.1f}" if scores else None,
                "scores": scores,
            }
        )
    return rows


def exemplar_jpeg(db: Database, images_dir: Path, job: Job, index: int) -> bytes:
    """The JPEG thumbnail of the job's `index`-th exemplar (NotFound past the last)."""
    result = job.analysis()
    references = result.references if result is not None else []
    if not 0 <= index < len(references):
        raise NotFound(f"job {job.id} has no exemplar {index}", code="unknown_exemplar")
    image_hash = references[index].image_hash
    images = report_images(db, images_dir, exemplar_hashes=[image_hash])
    uri = images.exemplars.get(image_hash)
    if uri is None:  # removed from the store since, or unreadable (the log says which)
        raise NotFound(f"the image of exemplar {index} is no longer stored", code="not_found")
    # report_images makes data URIs for one-file reports; the studio serves the same bytes.
    return base64.b64decode(uri.split(",", 1)[1])


def export_facts(job: Job) -> ExportFacts:
    """What the Markdown and PDF exports say besides the critique (as `mondrian export`)."""
    photo = job.photo_name or f"photo {job.image_hash[:12]}"
    return ExportFacts(job.id, photo, job.created_at, job.exif)


def jobs_of_photo(db: Database, job: Job) -> list[Job]:
    """The newest job per advisor and mode on the same stored photo (the studio posts one
    job per advisor for one upload), `job` among them, at most COMPARE_COLUMNS."""
    with db.read() as conn:
        rows = conn.execute(_SAME_PHOTO, (job.image_hash, COMPARE_COLUMNS * 8)).fetchall()
    newest: dict[tuple[str, str], Job] = {}
    for other in map(job_from_row, rows):
        newest.setdefault((other.advisor_id, other.mode_requested), other)
    newest[(job.advisor_id, job.mode_requested)] = job  # the one asked about, always
    others = sorted((j for j in newest.values() if j.id != job.id), key=_age)
    return sorted([*others[-(COMPARE_COLUMNS - 1) :], job], key=_age)


def _age(job: Job) -> tuple[str, str]:
    return (job.created_at, job.id)


def compare_columns(
    pairs: list[tuple[Job, Advisor]], means: Mapping[str, Mapping[str, float] | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The comparison's columns (one per job) and rows (one per dimension, the highest
    score marked unless all are equal); a job not done yet is a column without scores."""
    columns = []
    for job, advisor in pairs:
        result = job.analysis() if job.status == "done" else None
        column: dict[str, Any] = {
            "job": job,
            "advisor": advisor,
            "done": result is not None,
            "mode_used": result.mode_used if result is not None else None,
        }
        if result is not None:
            critique = scored(result, advisor)
            column["critique"] = critique
            column["overall"] = f"{critique.overall_score:.1f}"
            column["radar"] = radar(critique, means.get(advisor.id), size=240)
            column["scores"] = critique.dimensions.scores()
        columns.append(column)
    rows = []
    for key in DIMENSIONS:
        scores = [c["scores"][key] if c["done"] else None for c in columns]
        known = [s for s in scores if s is not None]
        top = max(known) if known else None
        tied = len(set(known)) <= 1
        cells = [{"value": s, "top": s is not None and s == top and not tied} for s in scores]
        rows.append({"key": key, "label": DIMENSION_LABELS[key], "cells": cells})
    return columns, rows
