"""The measured facts beside the scores: a view dict for templates/facts.html and
templates/facts_checks.html.

Three small inline SVGs drawn from the facts alone: the tones on Ansel Adams' zones with
the luminance percentiles marked, a box of the photo's aspect with its thirds, centre and
salient point, and a hue wheel with the dominant hues and the best harmony template named.
Then clipping shares, with the photo's clipping mask (reports/clipping.py) where a share
reaches MASK_SHOWN_SHARE, every fact with its meaning, and the checks (facts/checks.py)
grouped by the dimension they question, so each shows as a note beside that dimension's
score. Numbers are formatted here; the only text from a
result that enters an SVG is escaped here too (the rest goes through Jinja's autoescape).
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

from markupsafe import Markup, escape

from mondrian.reports.clipping import MASK_SHOWN_SHARE
from mondrian.schema import AnalysisResult, Fact

ZONE_NUMERALS = ("0", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")
_SVG = 'role="img"'  # inline in the page: no xmlns, no URL (tests/test_reports.py)


def facts_view(result: AnalysisResult, clipping_mask: str | None = None) -> dict[str, Any]:
    """What the facts templates show; `present` False when the result carries no facts.
    `clipping_mask`: the photo's mask as a data URI (reports/clipping.py), shown only
    where the result's facts clip at least MASK_SHOWN_SHARE of highlights or shadows."""
    values = {fact.name: fact.value for fact in result.facts}
    checks: dict[str, list[str]] = {}
    for check in result.checks:
        checks.setdefault(check.dimension or "", []).append(check.message)
    return {
        "present": bool(result.facts),
        "zones": _zones_svg(values),
        "thirds": _thirds_svg(values),
        "wheel": _wheel_svg(values),
        "clipping": _clipping(values),
        "clipping_mask": clipping_mask if clipping_shown(values) else None,
        "rows": [_row(fact) for fact in result.facts],
        "checks": checks,
        "check_count": len(result.checks),
    }


def _row(fact: Fact) -> dict[str, str]:
    return {"name": fact.name, "value": format_value(fact), "meaning": fact.meaning}


def format_value(fact: Fact) -> str:
    """A fact's value as a reader takes it in: shares as percentages, lists joined."""
    value = fact.value
    if isinstance(value, list):
        return ", ".join(_number(v, fact.unit) for v in value)
    if isinstance(value, str):
        return value
    return _number(value, fact.unit)


def _number(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.1%}"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{text} {unit}".strip()


def _clipping(values: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for key, label in (
        ("shadows_clipped", "Shadows at 0"),
        ("highlights_clipped", "Highlights at 255"),
    ):
        share = values.get(key)
        if isinstance(share, (int, float)):
            width = min(100.0, 100 * share)
            rows.append({"label": label, "share": f"{share:.1%}", "width": f"{width:.1f}"})
    return rows


def clipping_shown(values: dict[str, Any]) -> bool:
    """Whether enough is clipped for a mask to show something (MASK_SHOWN_SHARE)."""
    shares = (values.get("highlights_clipped"), values.get("shadows_clipped"))
    return any(isinstance(s, (int, float)) and s >= MASK_SHOWN_SHARE for s in shares)


def _el(tag: str, text: str | None = None, **attrs: object) -> str:
    """One SVG element; `stroke_width=2` becomes stroke-width="2", floats get one decimal."""
    shown = " ".join(
        f'{k.replace("_", "-")}="{f"{v:.1f}" if isinstance(v, float) else v}"'
        for k, v in attrs.items()
    )
    return f"<{tag} {shown}/>" if text is None else f"<{tag} {shown}>{escape(text)}</{tag}>"


def _svg(width: float, height: float, title: str, body: list[str], box: str = "") -> Markup:
    view = box or f"0 0 {width:.1f} {height:.1f}"
    head = f'<svg {_SVG} viewBox="{view}" width="{width:.0f}" height="{height:.0f}">'
    return Markup(f"{head}<title>{escape(title)}</title>{''.join(body)}</svg>")


def _zones_svg(values: dict[str, Any]) -> Markup | None:
    """Eleven bands, zone 0 black to X white, each with a bar of its share of pixels, and
    the 5th, 50th and 95th luminance percentiles marked on the same 0-1 scale."""
    zones = values.get("zones")
    if not isinstance(zones, list) or len(zones) != len(ZONE_NUMERALS):
        return None
    band, top = 32, max(max(zones), 1e-9)
    body = []
    for i, share in enumerate(zones):
        x, grey, bar = i * band, round(255 * i / 10), 90 * share / top
        middle = x + band / 2
        body += [
            _el("rect", x=x, y=0, width=band, height=100, fill=f"rgb({grey},{grey},{grey})"),
            _el("rect", x=x + 8, y=100 - bar, width=band - 16, height=bar, fill="#c0392b"),
            _el(
                "text",
                f"{share:.0%}",
                x=middle,
                y=14,
                font_size=10,
                text_anchor="middle",
                fill="#fff" if i < 5 else "#000",
            ),
            _el("text", ZONE_NUMERALS[i], x=middle, y=116, font_size=11, text_anchor="middle"),
        ]
    # Zone z holds luma within (z - 0.5)/10 .. (z + 0.5)/10 (zone = round(10 luma),
    # facts/spec.py), so luma l sits at x = (10 l + 0.5) band.
    for key, label in (("luminance_p05", "p5"), ("luminance_p50", "p50"), ("luminance_p95", "p95")):
        luma = values.get(key)
        if isinstance(luma, (int, float)):
            x = (10 * luma + 0.5) * band
            body += [
                _el("line", x1=x, y1=0, x2=x, y2=104, stroke="#2471a3", stroke_width=2),
                _el("text", label, x=x, y=130, font_size=9, text_anchor="middle", fill="#2471a3"),
            ]
    title = "Tones on the Zone System: share of pixels per zone"
    return _svg(band * len(zones), 132, title, body)


def _thirds_svg(values: dict[str, Any]) -> Markup | None:
    """The photo's frame at its aspect, its thirds lines and centre, the salient point."""
    position = values.get("subject_position")
    aspect = values.get("aspect_ratio")
    if not isinstance(position, list) or len(position) != 2:
        return None
    aspect = aspect if isinstance(aspect, (int, float)) and aspect > 0 else 1.5
    w, h = (240.0, 240.0 / aspect) if aspect >= 1 else (240.0 * aspect, 240.0)
    body = [_el("rect", x=0, y=0, width=w, height=h, fill="#f4f1ea", stroke="#333")]
    dashed = {"stroke": "#999", "stroke_dasharray": "4 3"}
    for k in (1, 2):
        body.append(_el("line", x1=w * k / 3, y1=0.0, x2=w * k / 3, y2=h, **dashed))
        body.append(_el("line", x1=0.0, y1=h * k / 3, x2=w, y2=h * k / 3, **dashed))
    body.append(_el("line", x1=w / 2 - 6, y1=h / 2, x2=w / 2 + 6, y2=h / 2, stroke="#666"))
    body.append(_el("line", x1=w / 2, y1=h / 2 - 6, x2=w / 2, y2=h / 2 + 6, stroke="#666"))
    body.append(
        _el(
            "circle",
            cx=position[0] * w,
            cy=position[1] * h,
            r=7,
            fill="#c0392b",
            fill_opacity=0.8,
            stroke="#fff",
            stroke_width=2,
        )
    )
    title = "The frame's thirds and centre, and the salient subject"
    return _svg(w + 4, h + 4, title, body, box=f"-2 -2 {w + 4:.1f} {h + 4:.1f}")


def _wheel_svg(values: dict[str, Any]) -> Markup | None:
    """A hue ring (0 degrees red at the top, clockwise), the dominant hues as spokes, and
    the best-fitting harmony template with its fit in the middle."""
    hues = values.get("dominant_hues")
    if values.get("monochrome") == "yes" or not isinstance(hues, list):
        return None
    size, outer, inner = 180, 84, 58
    c = size / 2
    body = []
    for start in range(0, 360, 10):
        rgb = (round(255 * v) for v in colorsys.hsv_to_rgb(start / 360, 0.8, 0.95))
        fill = "rgb({},{},{})".format(*rgb)
        body.append(_el("polygon", points=_sector(c, inner, outer, start, start + 10), fill=fill))
    for hue in hues:
        (x1, y1), (x2, y2) = _polar(c, 12, hue), _polar(c, outer + 4, hue)
        body.append(_el("line", x1=x1, y1=y1, x2=x2, y2=y2, stroke="#222", stroke_width=3))
    template, fit = values.get("harmony_template"), values.get("harmony_fit")
    if isinstance(template, str) and isinstance(fit, (int, float)):
        body.append(_el("text", template, x=c, y=c - 2, font_size=16, text_anchor="middle"))
        body.append(
            _el("text", f"fit {fit:.0%}", x=c, y=c + 14, font_size=10, text_anchor="middle")
        )
    return _svg(size, size, "Hue wheel: the dominant hues and the harmony template", body)


def _polar(c: float, r: float, degrees: float) -> tuple[float, float]:
    angle = math.radians(degrees)
    return c + r * math.sin(angle), c - r * math.cos(angle)


def _sector(c: float, inner: float, outer: float, start: float, end: float) -> str:
    """A ring sector as polygon points (the pages allow no <path>), its arcs in 2 steps."""
    mid = (start + end) / 2
    ring = [_polar(c, outer, a) for a in (start, mid, end)]
    ring += [_polar(c, inner, a) for a in (end, mid, start)]
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in ring)
