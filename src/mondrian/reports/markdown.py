"""A critique as Markdown (`mondrian export JOB --format md`): the words and the scores,
the checks that found the critique contradicting a measurement, and the measured facts
(formatted as the HTML reports show them, reports/facts_view.py).

Everything in it is text from a model, an advisor file or a photo's EXIF, so it is written
to show as text in any Markdown renderer: HTML's `<`, `>` and `&` become entities (renderers
pass raw HTML through), and a table cell's `|` and line breaks are escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mondrian.advisors.model import Advisor
from mondrian.reports.facts_view import format_value
from mondrian.reports.radar import DIMENSION_LABELS
from mondrian.schema import AnalysisResult, Check

# EXIF facts (images.PhotoExif's fields) in the order a photographer reads them.
EXIF_LABELS: dict[str, str] = {
    "camera": "Camera",
    "lens": "Lens",
    "focal_length": "Focal length",
    "aperture": "Aperture",
    "exposure": "Exposure",
    "iso": "ISO",
    "taken_at": "Taken",
}


@dataclass(frozen=True)
class ExportFacts:
    """What an export says besides the critique: the job and the photo."""

    job_id: str
    photo: str
    created_at: str
    exif: Mapping[str, str | int] = field(default_factory=dict)


def _text(value: object) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(value: object) -> str:
    return " ".join(_text(value).split()).replace("|", "\\|")


def _line(value: object) -> str:
    """One line of running text: a model's line breaks do not start Markdown blocks."""
    return " ".join(_text(value).split())


def render_markdown(result: AnalysisResult, advisor: Advisor, facts: ExportFacts) -> str:
    if result.advisor_id != advisor.id:
        raise ValueError(f"result is by {result.advisor_id!r}, not {advisor.id!r}")
    critique = result.critique
    lines = [
        f"# {_line(facts.photo)}, by {_line(advisor.name)}",
        "",
        f"**Overall {critique.overall_score:.2f}/10, grade {_line(critique.overall_grade)}**",
        "",
        _line(critique.image_description),
        "",
        "## Scores",
        "",
        "| Dimension | Score | Comment | Recommendation |",
        "|---|---:|---|---|",
    ]
    for key, dim in critique.dimensions.items():
        lines.append(
            f"| {DIMENSION_LABELS[key]} | {dim.score}/10 | {_cell(dim.comment)} "
            f"| {_cell(dim.recommendation)} |"
        )
    lines += _checks_lines(result)
    for title, items in (("Strengths", critique.strengths), ("To improve", critique.improvements)):
        if items:
            lines += ["", f"## {title}", "", *(f"- {_line(item)}" for item in items)]
    lines += _facts_lines(result)
    lines += ["", "## About this critique", ""]
    asked = result.mode_requested
    mode = result.mode_used + ("" if result.mode_used == asked else f" (asked {asked})")
    about = {
        "Job": facts.job_id,
        "Written": facts.created_at,
        "Advisor": f"{advisor.name} ({advisor.id})",
        "Mode": mode,
        "Model": result.model.base + (f" + {result.model.adapter}" if result.model.adapter else ""),
    }
    about.update({EXIF_LABELS[k]: str(facts.exif[k]) for k in EXIF_LABELS if k in facts.exif})
    lines += [f"- {label}: {_line(value)}" for label, value in about.items()]
    return "\n".join(lines) + "\n"


def check_label(check: Check) -> str:
    """What a check questions, as a reader names it: its dimension, or the critique."""
    return DIMENSION_LABELS.get(check.dimension or "", "Critique")


def _checks_lines(result: AnalysisResult) -> list[str]:
    if not result.checks:
        return []
    count = len(result.checks)
    lines = [
        "",
        "## Checks",
        "",
        f"{count} {'check' if count == 1 else 'checks'} found the critique contradicting a "
        "measurement of the photo; checks never change the scores.",
        "",
    ]
    return lines + [
        f"- **{check_label(c)}** (`{_line(c.rule)}`): {_line(c.message)}" for c in result.checks
    ]


def _facts_lines(result: AnalysisResult) -> list[str]:
    if not result.facts:
        return []
    lines = [
        "",
        "## Measured",
        "",
        "From the photo's pixels and EXIF, no model: the facts the model was shown.",
        "",
        "| Fact | Value | Meaning |",
        "|---|---:|---|",
    ]
    return lines + [
        f"| `{_cell(f.name)}` | {_cell(format_value(f))} | {_cell(f.meaning)} |"
        for f in result.facts
    ]
