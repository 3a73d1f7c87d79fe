"""HTML reports of an analysis and of an advisor.

Pages are self-contained: inline CSS, inline SVG, no script and no URL but the `data:`
URIs of the photo's and the exemplars' own JPEG thumbnails (reports/thumbnails.py), so a
report can be mailed, archived or printed and still look the same. Everything that comes
from a model, an advisor file or a request goes through Jinja's autoescaping; the only
markup passed in unescaped is the radar chart, which escapes its own text.

Templates get plain "view" dicts built here rather than the pydantic models, so that the
formatting decisions live in one place and StrictUndefined catches any typo in a template.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

import mondrian
from mondrian.advisors.model import Advisor
from mondrian.reports.facts_view import facts_view
from mondrian.reports.radar import DIMENSION_LABELS, radar_svg
from mondrian.reports.thumbnails import ReportImages
from mondrian.reports.views import (
    SHORT_LABELS,
    check_pair,
    dimension_rows,
    grade_band,
    paragraphs,
    pct,
    reference_rows,
    scored,
    timing_rows,
    weight_shares,
)
from mondrian.schema import DIMENSIONS, SCHEMA_VERSION, AnalysisResult
from mondrian.staging import write_atomic

TEMPLATES_DIR = Path(__file__).parent / "templates"

# Report kind -> file name written by write_reports.
REPORT_FILES: dict[str, str] = {
    "summary": "analysis_summary.html",
    "detailed": "analysis_detailed.html",
    "advisor_bio": "advisor_bio.html",
}

_FOOTER_LABELS: dict[str, str] = {
    "mondrian_version": "Mondrian",
    "generated_at": "Generated",
    "schema_version": "Schema",
    "advisor_id": "Advisor",
    "job_id": "Job",
    "mode": "Mode",
    "model_base": "Base model",
    "model_adapter": "Adapter",
    "model_variant": "Variant",
    "model_backend": "Backend",
}

_SUMMARY_FOCUS = 3  # how many weak dimensions the summary suggests starting with


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one Jinja environment every report and page renders with: autoescaped, strict."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template, whatever its extension (report.css is included)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --- view models -------------------------------------------------------------------------


def report_footer(
    result: AnalysisResult | None = None,
    advisor: Advisor | None = None,
    generated_at: datetime | None = None,
) -> dict[str, str]:
    """What a report says about itself: Mondrian version, time, and how it was produced.

    Keys are stable (they also become `<meta name="mondrian:KEY">` tags); absent facts
    are left out rather than shown as empty.
    """
    when = generated_at or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    footer = {
        "mondrian_version": mondrian.__version__,
        "generated_at": when.isoformat(timespec="seconds"),
        "schema_version": SCHEMA_VERSION,
    }
    if advisor is not None:
        footer["advisor_id"] = advisor.id
    if result is not None:
        footer["advisor_id"] = result.advisor_id
        if result.job_id:
            footer["job_id"] = result.job_id
        footer["mode"] = result.mode_used
        footer["model_base"] = result.model.base
        if result.model.adapter:
            footer["model_adapter"] = result.model.adapter
        footer["model_variant"] = result.model.variant
        if result.model.backend:
            footer["model_backend"] = result.model.backend
    return footer


def _page_context(
    result: AnalysisResult | None, advisor: Advisor, generated_at: datetime | None
) -> dict[str, Any]:
    footer = report_footer(result, advisor, generated_at)
    return {
        "footer": footer,
        "footer_items": [
            {"key": key, "label": _FOOTER_LABELS.get(key, key), "value": value}
            for key, value in footer.items()
        ],
        "advisor": {
            "id": advisor.id,
            "name": advisor.name,
            "years": advisor.years,
        },
    }


def _analysis_context(
    result: AnalysisResult,
    advisor: Advisor,
    portfolio_means: Mapping[str, float] | None,
    generated_at: datetime | None,
    images: ReportImages | None = None,
) -> dict[str, Any]:
    check_pair(result, advisor)
    images = images or ReportImages()
    critique = scored(result, advisor)
    assert critique.overall_score is not None and critique.overall_grade is not None
    # First, because it validates portfolio_means (all 8 dimensions, each within 0..10).
    radar = radar_svg(critique.dimensions.scores(), portfolio_means, size=440)
    dims = dimension_rows(critique, advisor, portfolio_means)
    # Lowest scores first; among equals, the dimension this advisor weighs most.
    focus = sorted(dims, key=lambda d: (d["score"], -d["weight"]))[:_SUMMARY_FOCUS]
    context = _page_context(result, advisor, generated_at)
    context.update(
        {
            "overall": {
                "score": f"{critique.overall_score:.2f}",
                "grade": critique.overall_grade,
                "band": grade_band(critique.overall_grade),
            },
            "description": critique.image_description,
            "photo": images.photo,
            "dimensions": dims,
            "focus": focus,
            "strengths": list(critique.strengths),
            "improvements": list(critique.improvements),
            "radar": radar,
            "has_portfolio": portfolio_means is not None,
            "mode": {
                "requested": result.mode_requested,
                "used": result.mode_used,
                "fallback": result.mode_requested != result.mode_used,
            },
            "model": {
                "base": result.model.base,
                "adapter": result.model.adapter,
                "variant": result.model.variant,
                "backend": result.model.backend,
            },
            "job_id": result.job_id,
            "show_references": result.mode_used == "rag" or bool(result.references),
            "references": reference_rows(result, images),
            "reference_heads": [
                {"short": SHORT_LABELS[key], "label": DIMENSION_LABELS[key]} for key in DIMENSIONS
            ],
            "timings": timing_rows(result.timings),
            "facts_view": facts_view(result, images.clipping),
        }
    )
    return context


# --- public API ----------------------------------------------------------------------------


def render_summary(
    result: AnalysisResult,
    advisor: Advisor,
    portfolio_means: Mapping[str, float] | None = None,
    *,
    generated_at: datetime | None = None,
    images: ReportImages | None = None,
) -> str:
    """One page: overall score and grade, radar chart, a bar per dimension, where to start.

    `portfolio_means` (the advisor portfolio's mean score per dimension, all 8) adds the
    reference polygon and markers; `images` the photo and the exemplars' thumbnails.
    Raises ValueError when the result is another advisor's.
    """
    context = _analysis_context(result, advisor, portfolio_means, generated_at, images)
    return environment().get_template("analysis_summary.html").render(context)


def render_detailed(
    result: AnalysisResult,
    advisor: Advisor,
    portfolio_means: Mapping[str, float] | None = None,
    *,
    generated_at: datetime | None = None,
    images: ReportImages | None = None,
) -> str:
    """Everything in the analysis: each dimension's score, expected score, comment and
    recommendation, strengths, improvements, how it was produced, references, timings."""
    context = _analysis_context(result, advisor, portfolio_means, generated_at, images)
    return environment().get_template("analysis_detailed.html").render(context)


def render_advisor_bio(advisor: Advisor, *, generated_at: datetime | None = None) -> str:
    """The advisor: life, bio, philosophy, techniques, sources and dimension weights."""
    shares = weight_shares(advisor)
    top = max(shares.values())
    context = _page_context(None, advisor, generated_at)
    context.update(
        {
            "bio": paragraphs(advisor.bio),
            "philosophy": paragraphs(advisor.philosophy),
            "techniques": list(advisor.techniques),
            # Sources are shown as text, never as links: a report loads nothing and points
            # nowhere, and the full citation prints the same as it reads on screen.
            "sources": list(advisor.sources),
            "weights": [
                {
                    "key": key,
                    "label": DIMENSION_LABELS[key],
                    "weight": f"{advisor.weights[key]:g}",
                    "share": f"{100 * shares[key]:.0f}",
                    "bar_pct": pct(shares[key], top),
                }
                for key in DIMENSIONS
            ],
        }
    )
    return environment().get_template("advisor_bio.html").render(context)


def write_reports(
    result: AnalysisResult,
    advisor: Advisor,
    out_dir: Path,
    portfolio_means: Mapping[str, float] | None = None,
    *,
    generated_at: datetime | None = None,
    images: ReportImages | None = None,
) -> dict[str, Path]:
    """Write the summary, detailed and advisor pages into `out_dir` (created if needed).

    All three are rendered before any is written, so a rendering error leaves the
    directory untouched. Returns {"summary", "detailed", "advisor_bio"} -> path.
    """
    when = generated_at or datetime.now(UTC)  # one timestamp for the set
    pages = {
        "summary": render_summary(
            result, advisor, portfolio_means, generated_at=when, images=images
        ),
        "detailed": render_detailed(
            result, advisor, portfolio_means, generated_at=when, images=images
        ),
        "advisor_bio": render_advisor_bio(advisor, generated_at=when),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, text in pages.items():
        path = out / REPORT_FILES[kind]
        write_atomic(path, text)
        paths[kind] = path
    return paths


def render_page(template: str, context: Mapping[str, Any], footer: Mapping[str, str]) -> str:
    """Any other report page (evaluation, A/B) in the same frame, CSS and footer."""
    page = {
        "footer": dict(footer),
        "footer_items": [
            {"key": key, "label": _FOOTER_LABELS.get(key, key.replace("_", " ")), "value": value}
            for key, value in footer.items()
        ],
        **context,
    }
    return environment().get_template(template).render(page)


def write_page(path: Path, html: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, html)
    return path
