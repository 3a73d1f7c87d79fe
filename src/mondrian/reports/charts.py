"""Small inline-SVG charts for evaluation and A/B pages: no script, no external resource.

Every label goes through `escape`; numbers are formatted here. Each function returns
Markup so templates can place the SVG as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#1f4e9c", "#c8372d", "#e3b021", "#2f7d4f", "#6b4ca3")


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def grouped_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    max_value: float | None = None,
    label: str = "chart",
    width: int = 640,
    height: int = 260,
) -> Markup:
    """One group of bars per category, one bar per series (None is drawn as missing)."""
    values = [v for vals in series.values() for v in vals if v is not None]
    top = max_value if max_value is not None else max(values, default=1.0) or 1.0
    left, bottom, plot_h = 40, 60, height - 80
    group_w = (width - left - 10) / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    body = [
        f'<line x1="{left}" y1="{20 + plot_h}" x2="{width - 10}" y2="{20 + plot_h}" '
        'stroke="#444" stroke-width="1"/>'
    ]
    for tick in range(5):
        value = top * tick / 4
        y = 20 + plot_h - plot_h * tick / 4
        body.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{value:.2g}</text>"
        )
    for i, category in enumerate(categories):
        x0 = left + i * group_w + group_w * 0.1
        for j, (name, vals) in enumerate(series.items()):
            value = vals[i]
            color = PALETTE[j % len(PALETTE)]
            x = x0 + j * bar_w
            if value is None:
                continue
            h = plot_h * min(value, top) / top
            body.append(
                f'<rect x="{x:.1f}" y="{20 + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{escape(name)} {escape(category)}: '
                f"{value:.3g}</title></rect>"
            )
        body.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - bottom + 36}" font-size="10" '
            f'text-anchor="middle">{escape(category)}</text>'
        )
    for j, name in enumerate(series):
        body.append(
            f'<rect x="{left + j * 110}" y="{height - 14}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{left + j * 110 + 14}" '
            f'y="{height - 5}" font-size="11">{escape(name)}</text>'
        )
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
