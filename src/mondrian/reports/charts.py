"""Small inline-SVG charts for evaluation and A/B pages: no script, no external resource.

Every label goes through `escape`; numbers are formatted here. Each function returns
Markup so templates can place the SVG as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#1f4e9c", "#c8372d", "#e3b021", "#2f7d4f", "#6b4ca3")


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


# Label geometry: SVG text is not measured in a static page, so widths are estimated from
# the font size (an average glyph is ~0.6 em wide in the sans-serif fonts reports use).
_FONT_PX = 10
_GLYPH_EM = 0.6
_SLANT_DEG = 35  # category labels too wide for their group are slanted this much
_NICE_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Ticks 0, s, 2s, ... up to at least `top`, with s a 1, 2, 2.5 or 5 times a power of ten,
    at most `count` steps: what an axis reads as round numbers (0, 0.5, 1, 1.5, 2 - never
    0, 0.59, 1.2, 1.8)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in _NICE_STEPS if m * power >= raw * (1 - 1e-9))
    steps = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def _tick_text(value: float, step: float) -> str:
    # As many decimals as the step needs: 0.25 two, 0.5 one, 2 none.
    decimals = next(d for d in range(6) if abs(step * 10**d - round(step * 10**d)) < 1e-6)
    return f"{value:.{decimals}f}"


def _text_px(text: str, font_px: float = _FONT_PX) -> float:
    return len(text) * font_px * _GLYPH_EM


def grouped_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    max_value: float | None = None,
    label: str = "chart",
    width: int = 640,
    height: int = 260,
) -> Markup:
    """One group of bars per category, one bar per series (None is drawn as missing).

    The value axis has round ticks (`nice_ticks`); category labels that would not fit under
    their group side by side are slanted, and the plot leaves room below for them and for
    the legend, so no two texts overlap."""
    values = [v for vals in series.values() for v in vals if v is not None]
    ticks = nice_ticks(max_value if max_value is not None else max(values, default=1.0) or 1.0)
    top, step = ticks[-1], ticks[1] - ticks[0]
    tick_texts = [_tick_text(t, step) for t in ticks]
    left = 10 + max(_text_px(t) for t in tick_texts)
    group_w = (width - left - 10) / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    widest = max((_text_px(c) for c in categories), default=0.0)
    slanted = widest > group_w * 0.95
    if slanted:
        # The first label ends under its group's centre and runs down-left: room for it,
        # with a quarter more than the estimate (serif fonts run wider than 0.6 em).
        reach = 1.25 * widest * math.cos(math.radians(_SLANT_DEG)) - group_w * 0.5 + 6
        if reach > left:
            left = reach
            group_w = (width - left - 10) / max(1, len(categories))
            bar_w = group_w * 0.8 / max(1, len(series))
    label_band = (
        widest * math.sin(math.radians(_SLANT_DEG)) + _FONT_PX * 2 if slanted else _FONT_PX * 2
    )
    legend_band = 22
    plot_top = 14
    plot_h = height - plot_top - label_band - legend_band
    base_y = plot_top + plot_h
    body = [
        f'<line x1="{left:.1f}" y1="{base_y:.1f}" x2="{width - 10}" y2="{base_y:.1f}" '
        'stroke="#444" stroke-width="1"/>'
    ]
    for value, text in zip(ticks, tick_texts, strict=True):
        y = base_y - plot_h * value / top
        body.append(
            f'<text x="{left - 4:.1f}" y="{y + 3.5:.1f}" font-size="{_FONT_PX}" '
            f'text-anchor="end">{text}</text>'
        )
    for i, category in enumerate(categories):
        x0 = left + i * group_w + group_w * 0.1
        for j, (name, vals) in enumerate(series.items()):
            value = vals[i]
            if value is None:
                continue
            h = plot_h * min(value, top) / top
            body.append(
                f'<rect x="{x0 + j * bar_w:.1f}" y="{base_y - h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(name)} '
                f"{escape(category)}: {value:.3g}</title></rect>"
            )
        cx, ty = x0 + group_w * 0.4, base_y + _FONT_PX + 4
        if slanted:
            body.append(
                f'<text x="{cx:.1f}" y="{ty:.1f}" font-size="{_FONT_PX}" text-anchor="end" '
                f'transform="rotate(-{_SLANT_DEG} {cx:.1f} {ty:.1f})">{escape(category)}</text>'
            )
        else:
            body.append(
                f'<text x="{cx:.1f}" y="{ty:.1f}" font-size="{_FONT_PX}" '
                f'text-anchor="middle">{escape(category)}</text>'
            )
    x = left
    for j, name in enumerate(series):
        body.append(
            f'<rect x="{x:.1f}" y="{height - 14}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{x + 14:.1f}" '
            f'y="{height - 5}" font-size="11">{escape(name)}</text>'
        )
        x += 14 + _text_px(name, 11) + 16  # each legend entry as wide as its name
    return _svg(width, height, body, label)


def scatter(
    points: Mapping[str, Sequence[tuple[float, float]]],
    *,
    domain: tuple[float, float] = (0.0, 10.0),
    x_label: str = "reference",
    y_label: str = "model",
    label: str = "scatter",
    size: int = 300,
) -> Markup:
    """Points per series on a square plot with the y = x diagonal."""
    lo, hi = domain
    pad = 36
    span = size - 2 * pad

    def pos(v: float) -> float:
        return span * (min(max(v, lo), hi) - lo) / (hi - lo)

    body = [
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#444"/>',
        f'<line x1="{pad}" y1="{pad + span}" x2="{pad + span}" y2="{pad}" stroke="#999" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{size / 2}" y="{size - 8}" font-size="11" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text x="12" y="{size / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {size / 2})">{escape(y_label)}</text>',
    ]
    for j, (name, pts) in enumerate(points.items()):
        color = PALETTE[j % len(PALETTE)]
        for x, y in pts:
            body.append(
                f'<circle cx="{pad + pos(x):.1f}" cy="{pad + span - pos(y):.1f}" r="3" '
                f'fill="{color}" fill-opacity="0.6"/>'
            )
        body.append(
            f'<rect x="{pad + j * 90}" y="8" width="10" height="10" fill="{color}"/>'
            f'<text x="{pad + j * 90 + 14}" y="17" font-size="11">{escape(name)}</text>'
        )
    return _svg(size, size, body, label)
