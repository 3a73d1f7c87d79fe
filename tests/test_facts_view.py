"""The facts beside the scores in the HTML reports: the zones, thirds and hue-wheel SVGs,
clipping shares, the facts table, and each check as a note in its dimension's block; a
result without facts shows none of it. The pages stay inert (tests/test_reports.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from mondrian.facts import measure
from mondrian.facts.checks import run_checks
from mondrian.images import read_image_file
from mondrian.reports.facts_view import facts_view, format_value
from mondrian.reports.render import render_detailed
from mondrian.schema import AnalysisResult, Critique, Fact
from test_reports import MEANS, WHEN, Page, all_pages, assert_inert, make_advisor, make_result

PHOTOS = Path(__file__).parent / "assets" / "photos"


def measured_result(photo: str = "chelsea.jpg", extra: list[Fact] | None = None) -> AnalysisResult:
    result = make_result()
    facts = [*measure(read_image_file(PHOTOS / photo)), *(extra or [])]
    # A tilt a visual_balance of 10 contradicts (tests/test_reports.py's scores).
    facts = [f for f in facts if f.name != "tilt"]
    facts.append(Fact(name="tilt", value=7.5, unit="degrees", meaning="The horizon's tilt."))
    critique = Critique.model_validate(result.critique.model_dump())
    return result.model_copy(update={"facts": facts, "checks": run_checks(critique, facts)})


def test_view_draws_three_well_formed_svgs() -> None:
    view = facts_view(measured_result())
    assert view["present"] and view["check_count"] >= 1
    for key in ("zones", "thirds", "wheel"):
        root = ET.fromstring(str(view[key]))
        assert root.tag == "svg" and root.find("title") is not None
    zones = ET.fromstring(str(view["zones"]))
    assert [t.text for t in zones.iter("text")][1::2][:11] == [
        "0", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X",
    ]  # fmt: skip
    thirds = ET.fromstring(str(view["thirds"]))
    assert len(list(thirds.iter("circle"))) == 1
    assert [c["label"] for c in view["clipping"]] == ["Shadows at 0", "Highlights at 255"]


def test_monochrome_photo_has_no_wheel() -> None:
    mono = [Fact(name="monochrome", value="yes", unit="", meaning="m")]
    view = facts_view(make_result().model_copy(update={"facts": mono}))
    assert view["wheel"] is None and view["zones"] is None and view["present"]


def test_detailed_page_shows_facts_and_notes_beside_their_dimension() -> None:
    result = measured_result()
    html = render_detailed(result, make_advisor(), MEANS, generated_at=WHEN)
    page = Page(html)
    assert_inert(page)
    assert "Measured" in page.text and "highlights_clipped" in page.text
    balance = html[html.index('data-dimension="visual_balance"') :]
    balance = balance[: balance.index("</article>")]
    assert 'data-check-dimension="visual_balance"' in balance
    assert "tilted by +7.5 degrees" in balance
    lighting = html[html.index('data-dimension="lighting"') :]
    assert 'data-check-dimension="lighting"' not in lighting[: lighting.index("</article>")]


def test_pages_with_facts_stay_inert_and_link_nowhere() -> None:
    for kind, html in all_pages(measured_result(), make_advisor(), MEANS).items():
        assert_inert(Page(html))
        if kind != "advisor_bio":
            assert "://" not in html and "<path" not in html


def test_a_result_without_facts_shows_no_measured_section() -> None:
    html = render_detailed(make_result(), make_advisor(), MEANS, generated_at=WHEN)
    assert 'class="measured"' not in html and "data-check-dimension" not in html


def test_hostile_fact_text_is_escaped() -> None:
    evil = [
        Fact(name="harmony_template", value="<script>x</script>", unit="", meaning="<b>m</b>"),
        Fact(name="harmony_fit", value=0.5, unit="share", meaning="fit"),
        Fact(name="dominant_hues", value=[10.0], unit="degrees", meaning="h"),
        Fact(name="monochrome", value="no", unit="", meaning="m"),
    ]
    result = make_result().model_copy(update={"facts": evil})
    html = render_detailed(result, make_advisor(), MEANS, generated_at=WHEN)
    assert "<script" not in html and "<b>" not in html
    assert_inert(Page(html))


def test_format_value() -> None:
    assert format_value(Fact(name="a", value=0.0312, unit="share", meaning="")) == "3.1%"
    assert format_value(Fact(name="b", value=-3.25, unit="degrees", meaning="")) == "-3.25 degrees"
    assert format_value(Fact(name="c", value=[30.0, 210.0], unit="degrees", meaning="")) == (
        "30 degrees, 210 degrees"
    )
    assert format_value(Fact(name="d", value="Canon", unit="", meaning="")) == "Canon"
