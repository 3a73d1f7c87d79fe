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

import re
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
from mondrian.schema import DIMENSIONS, SCHEMA_VERSION, AnalysisResult, Critique
from mondrian.staging import write_atomic

TEMPLATES_DIR = Path(__file__).parent / "templates"

# Report kind -> file name written by write_reports.
REPORT_FILES: dict[str, str] = {
    "summary": "analysis_summary.html",
    "detailed": "analysis_detailed.html",
    "advisor_bio": "advisor_bio.html",
}

# Short column heads for the references table (full names go in <abbr title>).
_SHORT_LABELS: dict[str, str] = {
    "composition": "Comp.",
    "lighting": "Light",
    "focus_sharpness": "Focus",
    "color_harmony": "Color",
    "subject_isolation": "Isol.",
    "depth_perspective": "Depth",
    "visual_balance": "Bal.",
    "emotional_impact": "Emot.",
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


def _band(score: float) -> str:
    return "high" if score >= 7.5 else "mid" if score >= 5 else "low"


def _grade_band(grade: str) -> str:
    return grade[:1].lower() if grade[:1] in "ABCD" else "f"


def _pct(value: float, scale: float = 10.0) -> str:
    # A number the template puts into a style attribute; always ours, never user text.
    return f"{max(0.0, min(100.0, 100 * value / scale)):.1f}"


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _scored(result: AnalysisResult, advisor: Advisor) -> Critique:
    critique = result.critique
    if critique.overall_score is None or critique.overall_grade is None:
        critique = critique.scored(advisor.weights)
    return critique


def _check_pair(result: AnalysisResult, advisor: Advisor) -> None:
    if result.advisor_id != advisor.id:
        raise ValueError(
            f"result is by advisor {result.advisor_id!r}, but advisor {advisor.id!r} was given"
        )


def _weight_shares(advisor: Advisor) -> dict[str, float]:
    total = sum(advisor.weights.values())
    return {key: advisor.weights[key] / total for key in DIMENSIONS}


def _dimension_rows(
    critique: Critique, advisor: Advisor, portfolio_means: Mapping[str, float] | None
) -> list[dict[str, Any]]:
    shares = _weight_shares(advisor)
    rows = []
    for key, dim in critique.dimensions.items():
        mean = None if portfolio_means is None else float(portfolio_means[key])
        rows.append(
            {
                "key": key,
                "label": DIMENSION_LABELS[key],
                "score": dim.score,
                "score_pct": _pct(dim.score),
                "band": _band(dim.score),
                "expected": None if dim.expected_score is None else f"{dim.expected_score:.2f}",
                "expected_pct": None if dim.expected_score is None else _pct(dim.expected_score),
                "portfolio_mean": None if mean is None else f"{mean:.1f}",
                "portfolio_pct": None if mean is None else _pct(mean),
                "weight_share": f"{100 * shares[key]:.0f}",
                "weight": shares[key],
                "comment": dim.comment,
                "recommendation": dim.recommendation,
            }
        )
    return rows


# Timing keys that are rates, not durations: `tokens_per_s` is tokens per second.
_RATE_SUFFIX = "_per_s"


def _timing_rows(timings: Mapping[str, float]) -> list[dict[str, str]]:
    # Keys carry no declared unit; a "_ms" suffix means milliseconds, "_per_s" a rate per
    # second, anything else seconds (what time.perf_counter differences give).
    rows = []
    for key, value in timings.items():
        name, seconds = key, float(value)
        if key.endswith(_RATE_SUFFIX):
            what = key[: -len(_RATE_SUFFIX)].replace("_", " ").strip()
            rows.append({"name": f"{what.capitalize()} per second", "value": f"{seconds:.1f}"})
            continue
        if key.endswith("_ms"):
            name, seconds = key[:-3], seconds / 1000
        elif key.endswith("_s"):
            name = key[:-2]
        shown = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
        rows.append({"name": name.replace("_", " ").strip().capitalize() or key, "value": shown})
    return rows


def _reference_rows(result: AnalysisResult, images: ReportImages) -> list[dict[str, Any]]:
    return [
        {
            "thumb": images.exemplars.get(ref.image_hash),
            "title": ref.title,
            "hash": ref.image_hash[:12],
            "full_hash": ref.image_hash,
            "similarity": f"{ref.similarity:.3f}",
            "scores": [ref.scores.get(key) for key in DIMENSIONS],
        }
        for ref in result.references
    ]


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
    _check_pair(result, advisor)
    images = images or ReportImages()
    critique = _scored(result, advisor)
    assert critique.overall_score is not None and critique.overall_grade is not None
    # First, because it validates portfolio_means (all 8 dimensions, each within 0..10).
    radar = radar_svg(critique.dimensions.scores(), portfolio_means, size=440)
    dims = _dimension_rows(critique, advisor, portfolio_means)
    # Lowest scores first; among equals, the dimension this advisor weighs most.
    focus = sorted(dims, key=lambda d: (d["score"], -d["weight"]))[:_SUMMARY_FOCUS]
    context = _page_context(result, advisor, generated_at)
    context.update(
        {
            "overall": {
                "score": f"{critique.overall_score:.2f}",
                "grade": critique.overall_grade,
                "band": _grade_band(critique.overall_grade),
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
            "references": _reference_rows(result, images),
            "reference_heads": [
                {"short": _SHORT_LABELS[key], "label": DIMENSION_LABELS[key]} for key in DIMENSIONS
            ],
            "timings": _timing_rows(result.timings),
            "facts_view": facts_view(result),
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
    shares = _weight_shares(advisor)
    top = max(shares.values())
    context = _page_context(None, advisor, generated_at)
    context.update(
        {
            "bio": _paragraphs(advisor.bio),
            "philosophy": _paragraphs(advisor.philosophy),
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
                    "bar_pct": _pct(shares[key], top),
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
