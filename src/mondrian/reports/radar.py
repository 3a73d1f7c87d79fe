"""An inline SVG radar (spider) chart of the eight dimensions.

The chart is a plain string of SVG: no script, no stylesheet, no external resource, so it
can sit inside a self-contained HTML report or be written out as a file. Colours and fonts
are presentation attributes rather than CSS so that the SVG renders (and prints) the same
wherever it is placed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from markupsafe import Markup, escape

from mondrian.schema import DIMENSION_LABELS, DIMENSIONS

# Human names of the dimensions, shared by every report.

PHOTO_COLOR = "#c8102e"
REFERENCE_COLOR = "#1f4e9c"
INK = "#1a1a1a"
GRID = "#c9c6bf"

# Drawn in a fixed coordinate system and scaled through width/height, so text and strokes
# keep their proportions at any size. The width leaves room for the side labels.
_VIEW_W = 460
_CHART_H = 400
_LEGEND_H = 34
_CX, _CY, _R = 230.0, 200.0, 128.0
_LABEL_GAP = 16.0
_FONT = 13
_LINE_H = 15
_WRAP_AT = 12  # labels longer than this go on two lines
_RINGS = (2, 4, 6, 8, 10)
_FONT_FAMILY = "Helvetica Neue, Helvetica, Arial, sans-serif"


def _num(value: float) -> str:
    # One decimal is far below a pixel at any sensible size; trims noise from the SVG.
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _values(scores: Mapping[str, float], what: str) -> list[float]:
    missing = [key for key in DIMENSIONS if key not in scores]
    if missing:
        raise ValueError(f"{what} lack dimensions {missing}")
    values = []
    for key in DIMENSIONS:
        value = float(scores[key])
        if not math.isfinite(value) or not 0 <= value <= 10:
            raise ValueError(f"{what}[{key!r}] = {value} is not within 0..10")
        values.append(value)
    return values


def _point(index: float, value: float) -> tuple[float, float]:
    # First axis points straight up; the rest follow clockwise.
    angle = -math.pi / 2 + 2 * math.pi * index / len(DIMENSIONS)
    radius = _R * value / 10
    return _CX + radius * math.cos(angle), _CY + radius * math.sin(angle)


def _points(values: list[float]) -> str:
    return " ".join(f"{_num(x)},{_num(y)}" for x, y in (_point(i, v) for i, v in enumerate(values)))


def _wrap(label: str) -> list[str]:
    if len(label) <= _WRAP_AT or " " not in label:
        return [label]
    # Break at the space nearest the middle so both lines are about as long.
    spaces = [i for i, ch in enumerate(label) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(label) / 2))
    return [label[:cut], label[cut + 1 :]]


def _axis_label(index: int, label: str) -> str:
    angle = -math.pi / 2 + 2 * math.pi * index / len(DIMENSIONS)
    cos, sin = math.cos(angle), math.sin(angle)
    x = _CX + (_R + _LABEL_GAP) * cos
    y = _CY + (_R + _LABEL_GAP) * sin
    anchor = "middle" if abs(cos) < 0.2 else ("start" if cos > 0 else "end")
    lines = _wrap(label)
    if sin < -0.3:  # above the centre: the last line sits on the label point
        first = y - (len(lines) - 1) * _LINE_H
    elif sin > 0.3:  # below: the first line hangs from it
        first = y + _FONT * 0.8
    else:  # beside: centred on it
        first = y - (len(lines) - 1) * _LINE_H / 2 + _FONT * 0.35
    spans = "".join(
        f'<tspan x="{_num(x)}" y="{_num(first + i * _LINE_H)}">{escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    return f'<text class="axis-label" text-anchor="{anchor}">{spans}</text>'


def _legend(y: float) -> str:
    items = (
        ("This photograph", PHOTO_COLOR, ""),
        ("Portfolio mean", REFERENCE_COLOR, ' stroke-dasharray="5 3"'),
    )
    parts = ['<g class="legend">']
    x = _CX - 140
    for text, color, dash in items:
        parts.append(
            f'<rect x="{_num(x)}" y="{_num(y - 9)}" width="18" height="10" fill="{color}" '
            f'fill-opacity="0.18" stroke="{color}" stroke-width="2"{dash}/>'
            f'<text x="{_num(x + 26)}" y="{_num(y)}">{escape(text)}</text>'
        )
        x += 150
    parts.append("</g>")
    return "".join(parts)


def radar_svg(
    scores: Mapping[str, float],
    reference: Mapping[str, float] | None = None,
    size: int = 320,
    *,
    standalone: bool = False,
) -> Markup:
    """The radar chart of `scores` (0..10 on each of the 8 dimensions), as inline SVG.

    `reference` (e.g. the advisor portfolio's mean scores) adds a dashed polygon and a
    legend. `size` is the rendered width in CSS pixels. `standalone` adds the SVG
    namespace declaration, needed when the chart is saved as its own .svg file; inside
    HTML it is left out so that a report carries no URL of any kind.
    Raises ValueError when a dimension is missing or a value is outside 0..10.
    """
    if size <= 0:
        raise ValueError("size must be positive")
    photo = _values(scores, "scores")
    ref = _values(reference, "reference") if reference is not None else None

    view_h = _CHART_H + (_LEGEND_H if ref is not None else 0)
    height = round(size * view_h / _VIEW_W)
    summary = "; ".join(
        f"{DIMENSION_LABELS[key]} {_num(value)}"
        for key, value in zip(DIMENSIONS, photo, strict=True)
    )
    xmlns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    parts = [
        f'<svg{xmlns} class="radar-chart" width="{size}" height="{height}" '
        f'viewBox="0 0 {_VIEW_W} {view_h}" role="img" font-family="{_FONT_FAMILY}" '
        f'font-size="{_FONT}" fill="{INK}">',
        f"<title>Scores out of 10: {escape(summary)}</title>",
        '<g class="grid" fill="none">',
    ]
    for ring in _RINGS:
        parts.append(
            f'<polygon class="ring" points="{_points([ring] * len(DIMENSIONS))}" '
            f'stroke="{GRID}" stroke-width="{1.2 if ring == 10 else 0.8}"/>'
        )
    for i, _key in enumerate(DIMENSIONS):
        x, y = _point(i, 10)
        parts.append(
            f'<line class="axis" x1="{_num(_CX)}" y1="{_num(_CY)}" x2="{_num(x)}" '
            f'y2="{_num(y)}" stroke="{GRID}" stroke-width="0.8"/>'
        )
    parts.append("</g>")
    # Ring values halfway between the first two axes, where no data point can sit.
    parts.append('<g class="ring-values" font-size="9" fill="#8a867d" text-anchor="middle">')
    for ring in _RINGS:
        x, y = _point(0.5, ring)
        parts.append(f'<text x="{_num(x)}" y="{_num(y + 3)}">{ring}</text>')
    parts.append("</g>")

    if ref is not None:
        parts.append(
            f'<polygon class="reference" points="{_points(ref)}" fill="{REFERENCE_COLOR}" '
            f'fill-opacity="0.08" stroke="{REFERENCE_COLOR}" stroke-width="2" '
            f'stroke-dasharray="5 3" stroke-linejoin="round"/>'
        )
    parts.append(
        f'<polygon class="photo" points="{_points(photo)}" fill="{PHOTO_COLOR}" '
        f'fill-opacity="0.18" stroke="{PHOTO_COLOR}" stroke-width="2.2" stroke-linejoin="round"/>'
    )
    parts.append(f'<g class="photo-points" fill="{PHOTO_COLOR}">')
    for i, value in enumerate(photo):
        x, y = _point(i, value)
        parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="3.2"/>')
    parts.append("</g>")

    parts.append('<g class="axis-labels">')
    parts.extend(_axis_label(i, DIMENSION_LABELS[key]) for i, key in enumerate(DIMENSIONS))
    parts.append("</g>")
    if ref is not None:
        parts.append(_legend(_CHART_H + _LEGEND_H / 2 + 2))
    parts.append("</svg>")
    # Every piece of text above went through escape(); the rest are our own numbers.
    return Markup("".join(parts))
