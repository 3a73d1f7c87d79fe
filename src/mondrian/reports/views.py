"""The rows the analysis and advisor pages are rendered from: each dimension's score, band,
weight and portfolio comparison, the timings, the retrieved exemplars. Plain dicts and
strings, so the formatting decisions live here and the templates only lay them out
(reports/render.py renders them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mondrian.advisors.model import Advisor
from mondrian.reports.radar import DIMENSION_LABELS
from mondrian.reports.thumbnails import ReportImages
from mondrian.schema import DIMENSIONS, AnalysisResult, Critique

# Short column heads for the references table (full names go in <abbr title>).
SHORT_LABELS: dict[str, str] = {
    "composition": "Comp.",
    "lighting": "Light",
    "focus_sharpness": "Focus",
    "color_harmony": "Color",
    "subject_isolation": "Isol.",
    "depth_perspective": "Depth",
    "visual_balance": "Bal.",
    "emotional_impact": "Emot.",
}


def band(score: float) -> str:
    return "high" if score >= 7.5 else "mid" if score >= 5 else "low"


def grade_band(grade: str) -> str:
    return grade[:1].lower() if grade[:1] in "ABCD" else "f"


def pct(value: float, scale: float = 10.0) -> str:
    # A number the template puts into a style attribute; always ours, never user text.
    return f"{max(0.0, min(100.0, 100 * value / scale)):.1f}"


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def scored(result: AnalysisResult, advisor: Advisor) -> Critique:
    critique = result.critique
    if critique.overall_score is None or critique.overall_grade is None:
        critique = critique.scored(advisor.weights)
    return critique


def check_pair(result: AnalysisResult, advisor: Advisor) -> None:
    if result.advisor_id != advisor.id:
        raise ValueError(
            f"result is by advisor {result.advisor_id!r}, but advisor {advisor.id!r} was given"
        )


def weight_shares(advisor: Advisor) -> dict[str, float]:
    total = sum(advisor.weights.values())
    return {key: advisor.weights[key] / total for key in DIMENSIONS}


def dimension_rows(
    critique: Critique, advisor: Advisor, portfolio_means: Mapping[str, float] | None
) -> list[dict[str, Any]]:
    shares = weight_shares(advisor)
    rows = []
    for key, dim in critique.dimensions.items():
        mean = None if portfolio_means is None else float(portfolio_means[key])
        rows.append(
            {
                "key": key,
                "label": DIMENSION_LABELS[key],
                "score": dim.score,
                "score_pct": pct(dim.score),
                "band": band(dim.score),
                "expected": None if dim.expected_score is None else f"{dim.expected_score:.2f}",
                "expected_pct": None if dim.expected_score is None else pct(dim.expected_score),
                "expected_unavailable": dim.expected_score_unavailable,
                "portfolio_mean": None if mean is None else f"{mean:.1f}",
                "portfolio_pct": None if mean is None else pct(mean),
                "weight_share": f"{100 * shares[key]:.0f}",
                "weight": shares[key],
                "comment": dim.comment,
                "recommendation": dim.recommendation,
            }
        )
    return rows


# Timing keys that are rates, not durations: `tokens_per_s` is tokens per second.
_RATE_SUFFIX = "_per_s"


def timing_rows(timings: Mapping[str, float]) -> list[dict[str, str]]:
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


def reference_rows(result: AnalysisResult, images: ReportImages) -> list[dict[str, Any]]:
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
