"""The facts beside the scores in the HTML reports: the zones, thirds and hue-wheel SVGs,
clipping shares and, where enough clips, the clipping mask; the facts table, and each check
as a note in its dimension's block; a result without facts shows none of it. The pages stay
inert (tests/test_reports.py)."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from mondrian.facts import measure
from mondrian.facts.checks import run_checks
from mondrian.images import read_image, read_image_file
from mondrian.reports.clipping import (
    HIGHLIGHT_RGB,
    MASK_SHOWN_SHARE,
    MASK_SIDE,
    SHADOW_RGB,
    clipping_mask_uri,
)
from mondrian.reports.facts_view import facts_view, format_value
from mondrian.reports.render import render_detailed
from mondrian.reports.thumbnails import ReportImages, report_images, thumbnail_uri
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


def _brightened(name: str, factor: float = 1.6) -> bytes:
    out = io.BytesIO()
    image = Image.open(PHOTOS / name).convert("RGB")
    ImageEnhance.Brightness(image).enhance(factor).save(out, format="JPEG", quality=92)
    return out.getvalue()


def _mask_pixels(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def _page_for(data: bytes) -> tuple[str, AnalysisResult]:
    result = make_result().model_copy(update={"facts": measure(read_image(data))})
    images = ReportImages(photo=thumbnail_uri(data), clipping=clipping_mask_uri(data))
    return render_detailed(result, make_advisor(), MEANS, generated_at=WHEN, images=images), result


def _masks(html: str) -> list[str]:
    return [
        attrs["src"] or ""
        for tag, attrs in Page(html).elements
        if tag == "img" and (attrs.get("src") or "").startswith("data:image/png")
    ]


def test_a_brightened_photo_shows_its_clipping_mask_where_it_clips() -> None:
    data = _brightened("chelsea.jpg")
    html, result = _page_for(data)
    values = {fact.name: fact.value for fact in result.facts}
    assert values["highlights_clipped"] >= MASK_SHOWN_SHARE
    assert_inert(Page(html))
    (mask,) = _masks(html)
    pixels = _mask_pixels(mask)
    assert max(pixels.shape[:2]) <= MASK_SIDE
    red = (pixels == HIGHLIGHT_RGB).all(axis=2).mean()
    # The mask's own count of blown pixels (from the pixels, at its size) agrees with the
    # fact's share measured on facts/views.py's sample within a few points.
    assert red >= MASK_SHOWN_SHARE and abs(red - values["highlights_clipped"]) < 0.05
    # Red where the photo is blown, and only there: the marked pixels are the bright ones.
    source = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert source.shape[:2] == pixels.shape[:2]  # 160 px: under MASK_SIDE, not resized
    marked = (pixels == HIGHLIGHT_RGB).all(axis=2)
    assert (source[marked].max(axis=1) == 255).all()


def test_the_original_photo_clips_too_little_for_a_mask() -> None:
    data = (PHOTOS / "chelsea.jpg").read_bytes()
    html, result = _page_for(data)
    values = {fact.name: fact.value for fact in result.facts}
    assert values["highlights_clipped"] < MASK_SHOWN_SHARE
    assert values["shadows_clipped"] < MASK_SHOWN_SHARE
    assert _masks(html) == [] and 'class="clipping-mask"' not in html
    # The mask computed anyway is nearly empty: what the page leaves out, it would not show.
    marked = (_mask_pixels(clipping_mask_uri(data)) == HIGHLIGHT_RGB).all(axis=2).mean()
    assert marked < MASK_SHOWN_SHARE


def test_crushed_shadows_alone_show_the_mask_in_blue() -> None:
    out = io.BytesIO()
    image = Image.open(PHOTOS / "chelsea.jpg").convert("RGB")
    ImageEnhance.Brightness(image).enhance(0.4).save(out, format="JPEG", quality=92)
    html, result = _page_for(out.getvalue())
    values = {fact.name: fact.value for fact in result.facts}
    assert values["shadows_clipped"] >= MASK_SHOWN_SHARE
    (mask,) = _masks(html)
    assert (_mask_pixels(mask) == SHADOW_RGB).all(axis=2).mean() >= MASK_SHOWN_SHARE


def test_a_large_photo_is_masked_downscaled_and_small() -> None:
    big = Image.new("RGB", (4000, 3000), (120, 120, 120))
    big.paste((255, 255, 255), (0, 0, 2000, 3000))  # the left half blown
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    uri = clipping_mask_uri(out.getvalue())
    pixels = _mask_pixels(uri)
    assert pixels.shape[:2] == (240, MASK_SIDE) and len(uri) < 40_000
    red = (pixels == HIGHLIGHT_RGB).all(axis=2)
    assert 0.45 < red.mean() < 0.55 and red[:, :150].all() and not red[:, 170:].any()


def test_report_images_carries_the_mask_of_the_photo(tmp_path) -> None:
    data = _brightened("chelsea.jpg")
    images = report_images(None, tmp_path, photo=data)  # type: ignore[arg-type]  # no db read
    assert images.photo and images.clipping == clipping_mask_uri(data)
    assert report_images(None, tmp_path).clipping is None  # type: ignore[arg-type]
