"""HTML reports: content, escaping, self-containment, the radar chart, writing files."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

import mondrian
from mondrian.advisors.model import Advisor
from mondrian.reports import (
    DIMENSION_LABELS,
    REPORT_FILES,
    radar_svg,
    render_advisor_bio,
    render_detailed,
    render_summary,
    report_footer,
    write_reports,
)
from mondrian.reports import render as render_mod
from mondrian.schema import (
    DIMENSIONS,
    AnalysisResult,
    ModelInfo,
    Reference,
    example_critique,
    grade_for,
    overall_score,
)

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
SCORES = dict(zip(DIMENSIONS, [9, 3, 8, 4, 7, 5, 10, 2], strict=True))
# Lighting weighs 5x: the weighted grade differs from the unweighted one (checked below).
WEIGHTS = {key: (5.0 if key == "lighting" else 1.0) for key in DIMENSIONS}
MEANS = {key: 6.5 for key in DIMENSIONS}
SOURCE_URL = "https://example.org/ansel-adams/biography"

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
BOLD = "<b>Ansel</b> Adams"


def make_advisor(**overrides: object) -> Advisor:
    data: dict[str, object] = {
        "id": "ansel",
        "name": "Ansel Adams",
        "years": "1902-1984",
        "bio": "American landscape photographer of the West.\n\nCo-founder of Group f/64.",
        "sources": ["Adams, A. The Negative. Little, Brown, 1981.", SOURCE_URL],
        "philosophy": "A photograph is not an accident; it is a concept.",
        "techniques": ["Zone System", "Previsualization", "Large-format view camera"],
        "voice_prompt": "You are Ansel Adams.",
        "weights": WEIGHTS,
    }
    data.update(overrides)
    return Advisor.model_validate(data)


def make_critique(**dim_overrides: str) -> dict:
    """example_critique() with varied scores, expected scores, and per-dimension text."""
    data = example_critique().model_dump()
    for key, score in SCORES.items():
        dim = data["dimensions"][key]
        dim["score"] = score
        dim["expected_score"] = round(max(0.0, score - 0.37), 2)
        dim["comment"] = f"Comment on {key}."
        dim["recommendation"] = f"Recommendation for {key}."
    for field, text in dim_overrides.items():
        key, attr = field.split("__")
        data["dimensions"][key][attr] = text
    return data


def make_result(critique: dict | None = None, **overrides: object) -> AnalysisResult:
    data: dict[str, object] = {
        "job_id": "job-123",
        "advisor_id": "ansel",
        "mode_requested": "lora",
        "mode_used": "rag",
        "model": ModelInfo(
            base="Qwen/Qwen2.5-VL-3B-Instruct",
            adapter="ansel@v3",
            variant="fine_tuned",
            backend="transformers",
        ),
        "critique": critique or make_critique(),
        "references": [
            Reference(
                image_hash="ab" * 32,
                similarity=0.91234,
                scores={key: 7 for key in DIMENSIONS},
                title="Moonrise, Hernandez",
            )
        ],
        "timings": {"total_s": 3.25, "retrieval_ms": 42.0},
    }
    data.update(overrides)
    return AnalysisResult.model_validate(data)


class Page(HTMLParser):
    """A parsed page: every element with its attributes, and the text as a reader sees it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.styles: list[str] = []
        self._open: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        (self.styles if self._open[-1:] == ["style"] else self.texts).append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.texts))

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}

    def find(self, tag: str | None = None, **attrs: str) -> list[dict[str, str | None]]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            a
            for t, a in self.elements
            if (tag is None or t == tag) and all(a.get(k) == v for k, v in wanted.items())
        ]

    def meta(self, name: str) -> str | None:
        found = self.find("meta", name=name)
        return found[0]["content"] if found else None


def all_pages(result: AnalysisResult, advisor: Advisor, means=None) -> dict[str, str]:
    return {
        "summary": render_summary(result, advisor, means, generated_at=WHEN),
        "detailed": render_detailed(result, advisor, means, generated_at=WHEN),
        "advisor_bio": render_advisor_bio(advisor, generated_at=WHEN),
    }


# --- content -----------------------------------------------------------------------------


def test_summary_shows_scores_grade_and_advisor() -> None:
    page = Page(render_summary(make_result(), make_advisor(), generated_at=WHEN))
    expected = overall_score(SCORES, WEIGHTS)
    assert grade_for(expected) != grade_for(overall_score(SCORES, None))  # weights matter
    assert page.find(data_grade=grade_for(expected))
    assert page.find(data_overall=f"{expected:.2f}")
    assert "Ansel Adams" in page.text
    for key, score in SCORES.items():
        rows = page.find("li", data_dimension=key, class_="dim-row")
        assert len(rows) == 1 and rows[0]["data-score"] == str(score)
        assert DIMENSION_LABELS[key] in page.text
    # "Where to start" names the weakest dimensions with their advice.
    assert "Recommendation for emotional_impact." in page.text
    assert "Comment on lighting." in page.text
    assert "Tonal separation between rock and sky." in page.text  # a strength
    assert "svg" in page.tags()


def test_detailed_shows_every_dimension_and_provenance() -> None:
    page = Page(render_detailed(make_result(), make_advisor(), MEANS, generated_at=WHEN))
    text = page.text
    for key, score in SCORES.items():
        cards = page.find("article", data_dimension=key)
        assert len(cards) == 1 and cards[0]["data-score"] == str(score)
        assert DIMENSION_LABELS[key] in text
        assert f"Comment on {key}." in text
        assert f"Recommendation for {key}." in text
        assert f"expected {max(0.0, score - 0.37):.2f}" in text
    assert "portfolio 6.5" in text
    assert "A lone pine on a granite ridge" in text
    assert "Give the tree more room at the top of the frame." in text  # an improvement
    for fact in ("lora", "rag", "Qwen/Qwen2.5-VL-3B-Instruct", "ansel@v3", "fine_tuned"):
        assert fact in text
    assert "fell back from lora" in text
    # RAG references table, and timings with their units.
    assert "Moonrise, Hernandez" in text and "0.912" in text and ("ab" * 6) in text
    assert "Total" in text and "3.25 s" in text and "42 ms" in text
    assert page.find(data_grade=grade_for(overall_score(SCORES, WEIGHTS)))


def test_detailed_without_rag_has_no_references_and_trusts_a_computed_overall() -> None:
    critique = make_critique()
    critique.update(overall_score=9.5, overall_grade="A+")  # as computed upstream
    result = make_result(
        critique, mode_requested="baseline", mode_used="baseline", references=[], timings={}
    )
    html = render_detailed(result, make_advisor(), generated_at=WHEN)
    page = Page(html)
    assert "Portfolio references" not in page.text and "<table" not in html
    assert "fell back" not in page.text and "Timings" not in page.text
    assert page.find(data_grade="A+") and page.find(data_overall="9.50")
    assert 'class="reference"' not in html  # no portfolio polygon without means


def test_advisor_bio_content() -> None:
    page = Page(render_advisor_bio(make_advisor(), generated_at=WHEN))
    text = page.text
    for fact in (
        "Ansel Adams",
        "1902-1984",
        "American landscape photographer of the West.",
        "Co-founder of Group f/64.",
        "A photograph is not an accident; it is a concept.",
        "Zone System",
        "Large-format view camera",
        "Adams, A. The Negative. Little, Brown, 1981.",
        SOURCE_URL,
    ):
        assert fact in text
    assert len(page.find("p")) >= 3  # bio split into paragraphs
    # Lighting is 5 of 12 weight units.
    assert page.find("li", data_dimension="lighting", data_weight="5")
    assert "42%" in text and "8%" in text
    for key in DIMENSIONS:
        assert DIMENSION_LABELS[key] in text


def test_footer_describes_the_artifact() -> None:
    pages = all_pages(make_result(), make_advisor())
    for kind, html in pages.items():
        page = Page(html)
        assert page.meta("mondrian:mondrian_version") == mondrian.__version__, kind
        assert page.meta("mondrian:generated_at") == "2024-05-06T07:08:09+00:00", kind
        assert page.find("meta", name="generator", content=f"Mondrian {mondrian.__version__}")
        assert page.find("div", class_="footer-item", data_key="generated_at"), kind
        assert "2024-05-06T07:08:09+00:00" in page.text
    detailed = Page(pages["detailed"])
    assert detailed.meta("mondrian:model_base") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert detailed.meta("mondrian:model_adapter") == "ansel@v3"
    assert detailed.meta("mondrian:model_variant") == "fine_tuned"
    assert detailed.meta("mondrian:job_id") == "job-123"
    assert Page(pages["advisor_bio"]).meta("mondrian:model_base") is None
    footer = report_footer(make_result(), generated_at=datetime(2024, 1, 1))  # naive: UTC
    assert footer["generated_at"] == "2024-01-01T00:00:00+00:00"
    assert "model_backend" in footer and "model_adapter" in footer


def test_result_of_another_advisor_is_refused() -> None:
    with pytest.raises(ValueError, match="advisor"):
        render_summary(make_result(advisor_id="fan_ho"), make_advisor())


def test_partial_portfolio_means_are_refused() -> None:
    with pytest.raises(ValueError, match="lack dimensions"):
        render_detailed(make_result(), make_advisor(), {"composition": 5.0})


def test_environment_escapes_and_is_strict() -> None:
    env = render_mod.environment()
    assert env.autoescape is True and env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ nothing_here }}").render()


# --- escaping ----------------------------------------------------------------------------

# Tags a report may contain; anything else (script, img, iframe, b from a name...) is a leak.
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "header", "footer", "section",
    "article", "figure", "figcaption", "div", "span", "p", "h1", "h2", "h3", "ul", "ol", "li",
    "dl", "dt", "dd", "strong", "code", "cite", "blockquote", "abbr", "br", "table", "thead",
    "tbody", "tr", "th", "td", "svg", "g", "polygon", "line", "circle", "rect", "text",
    "tspan",
}  # fmt: skip
LOADING_ATTRS = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data"}
STYLE_ATTR = re.compile(r"^(width|left): \d{1,3}(\.\d)?%$")


# The one loading attribute a report has: an <img> of its own JPEG thumbnail, inline, or of
# the photo's clipping mask as a PNG (reports/clipping.py).
DATA_JPEG = re.compile(r"^data:image/jpeg;base64,[A-Za-z0-9+/]+=*$")
DATA_IMAGE = re.compile(r"^data:image/(jpeg|png);base64,[A-Za-z0-9+/]+=*$")


def assert_inert(page: Page) -> None:
    assert page.tags() <= ALLOWED_TAGS | {"img"}, page.tags() - ALLOWED_TAGS
    for tag, attrs in page.elements:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if tag == "img" and name == "src":
                assert DATA_IMAGE.match(value or ""), (tag, (value or "")[:60])
                continue
            assert name not in LOADING_ATTRS, (tag, name)
            if name == "style":  # only our own numbers reach a style attribute
                assert STYLE_ATTR.match(value or ""), (tag, value)


def hostile() -> tuple[AnalysisResult, Advisor]:
    critique = make_critique(
        composition__comment=SCRIPT,
        lighting__recommendation=IMG,
        emotional_impact__comment=SCRIPT,  # lowest score: also in the summary
        emotional_impact__recommendation=IMG,
    )
    critique["image_description"] = f"{SCRIPT} {IMG}"
    critique["strengths"] = [SCRIPT]
    critique["improvements"] = [IMG]
    result = make_result(
        critique,
        job_id=IMG,
        mode_requested=SCRIPT,
        model=ModelInfo(base=IMG, adapter=SCRIPT, variant=BOLD, backend=IMG),
        references=[Reference(image_hash=IMG, similarity=0.5, title=SCRIPT)],
        timings={IMG: 1.0},
    )
    advisor = make_advisor(
        name=BOLD,
        years=IMG,
        bio=SCRIPT,
        philosophy=IMG,
        techniques=[SCRIPT],
        sources=[IMG, "javascript:alert(1)"],
    )
    return result, advisor


@pytest.mark.parametrize("kind", list(REPORT_FILES))
def test_hostile_text_renders_inert(kind: str) -> None:
    result, advisor = hostile()
    page = Page(all_pages(result, advisor, MEANS)[kind])
    assert_inert(page)
    assert "b" not in page.tags() and "script" not in page.tags() and "img" not in page.tags()
    # Shown as text, not dropped: the reader sees exactly what was written.
    assert BOLD in page.text
    assert SCRIPT in page.text
    assert IMG in page.text
    # Attribute values (meta tags) keep the text whole instead of being broken out of.
    if kind != "advisor_bio":
        assert page.meta("mondrian:job_id") == IMG
        assert page.meta("mondrian:model_base") == IMG


def test_normal_pages_are_inert_too() -> None:
    for html in all_pages(make_result(), make_advisor(), MEANS).values():
        assert_inert(Page(html))


# --- self-contained and printable --------------------------------------------------------


def test_pages_load_nothing_and_link_nowhere() -> None:
    pages = all_pages(make_result(), make_advisor(), MEANS)
    for kind, html in pages.items():
        page = Page(html)
        for _tag, attrs in page.elements:
            for value in attrs.values():
                assert "http:" not in (value or "") and "https:" not in (value or ""), kind
        css = " ".join(page.styles)
        assert "url(" not in css and "@import" not in css and "@font-face" not in css
        assert "<link" not in html and "<script" not in html
    # The analysis pages carry no URL at all (the inline SVG has no xmlns either).
    assert "://" not in pages["summary"] and "://" not in pages["detailed"]
    # Decision: a source that is a URL is shown as text, never as a link.
    bio = Page(pages["advisor_bio"])
    assert not bio.find("a") and SOURCE_URL in bio.text
    assert pages["advisor_bio"].count("https://") == 1


def test_pages_are_printable() -> None:
    css = " ".join(Page(render_advisor_bio(make_advisor(), generated_at=WHEN)).styles)
    assert "size: A4" in css
    print_rules = css[css.index("@media print") :]
    assert "background: #ffffff" in print_rules and "box-shadow: none" in print_rules
    assert "break-inside: avoid" in print_rules


# --- radar chart -------------------------------------------------------------------------


def svg_tree(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything not well-formed


def test_radar_is_well_formed_with_eight_axes() -> None:
    root = svg_tree(str(radar_svg(SCORES)))
    assert root.tag == "svg"
    axes = [e for e in root.iter("line") if e.get("class") == "axis"]
    assert len(axes) == 8
    labels = " ".join("".join(t.itertext()) for t in root.iter("text") if t.get("class"))
    for key in DIMENSIONS:
        # Long labels wrap onto two lines; the words are all there.
        for word in DIMENSION_LABELS[key].split():
            assert word in labels
    photo = [p for p in root.iter("polygon") if p.get("class") == "photo"]
    assert len(photo) == 1
    points = [tuple(map(float, p.split(","))) for p in photo[0].get("points", "").split()]
    assert len(points) == 8
    # Composition (first axis) points straight up, 9/10 of the radius from the centre.
    cx, cy = float(axes[0].get("x1", 0)), float(axes[0].get("y1", 0))
    top = float(axes[0].get("y2", 0))
    assert points[0][0] == pytest.approx(cx, abs=0.1)
    assert points[0][1] == pytest.approx(cy - 0.9 * (cy - top), abs=0.1)
    rings = [e for e in root.iter("polygon") if e.get("class") == "ring"]
    assert len(rings) == 5
    assert not [p for p in root.iter("polygon") if p.get("class") == "reference"]
    assert not [g for g in root.iter("g") if g.get("class") == "legend"]
    assert "://" not in str(radar_svg(SCORES))


def test_radar_reference_polygon_and_legend_only_when_given() -> None:
    root = svg_tree(str(radar_svg(SCORES, MEANS, size=500)))
    refs = [p for p in root.iter("polygon") if p.get("class") == "reference"]
    assert len(refs) == 1 and len(refs[0].get("points", "").split()) == 8
    legend = [g for g in root.iter("g") if g.get("class") == "legend"]
    assert len(legend) == 1 and "Portfolio mean" in "".join(legend[0].itertext())
    assert root.get("width") == "500"


def test_radar_standalone_declares_the_svg_namespace() -> None:
    root = svg_tree(str(radar_svg(SCORES, standalone=True)))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize(
    "scores",
    [
        {k: 5 for k in DIMENSIONS[:-1]},
        {**SCORES, "lighting": 11},
        {**SCORES, "lighting": float("nan")},
    ],
)
def test_radar_refuses_bad_scores(scores: dict) -> None:
    with pytest.raises(ValueError):
        radar_svg(scores)


# --- writing -----------------------------------------------------------------------------


def test_write_reports_writes_three_complete_pages(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "job-123"
    result, advisor = make_result(), make_advisor()
    paths = write_reports(result, advisor, out, MEANS, generated_at=WHEN)
    assert set(paths) == {"summary", "detailed", "advisor_bio"}
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES.values())
    expected = all_pages(result, advisor, MEANS)
    for kind, path in paths.items():
        assert path.parent == out and path.name == REPORT_FILES[kind]
        assert path.read_text(encoding="utf-8") == expected[kind]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    # Writing again replaces the pages in place.
    later = datetime(2025, 1, 1, tzinfo=UTC)
    write_reports(result, advisor, out, generated_at=later)
    assert "2025-01-01T00:00:00+00:00" in paths["summary"].read_text(encoding="utf-8")
    assert len(list(out.iterdir())) == 3


def test_write_reports_writes_nothing_when_rendering_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_reports(make_result(advisor_id="fan_ho"), make_advisor(), tmp_path / "r")
    assert not (tmp_path / "r").exists()


# --- the photo, the exemplars, the timing units (issue 16) ---------------------------------


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def _decoded(uri: str):
    import base64
    import io

    from PIL import Image

    assert DATA_JPEG.match(uri)
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_the_photo_is_on_both_critique_pages_as_a_bounded_thumbnail() -> None:
    from mondrian.reports.thumbnails import THUMB_SIDE, ReportImages, thumbnail_uri

    photo = thumbnail_uri(_jpeg((3000, 2000), (200, 40, 40)))
    images = ReportImages(photo=photo)
    for render in (render_summary, render_detailed):
        page = Page(render(make_result(), make_advisor(), generated_at=WHEN, images=images))
        (img,) = [attrs for tag, attrs in page.elements if tag == "img" and attrs.get("alt")]
        assert img["alt"] == "The photo critiqued" and img["src"] == photo
        assert_inert(page)
    thumb = _decoded(photo)
    assert thumb.size == (THUMB_SIDE, round(THUMB_SIDE * 2 / 3))  # the aspect kept
    assert len(photo) < 60_000  # a single-file report stays small


def test_the_page_policy_admits_its_inline_pictures_and_nothing_remote() -> None:
    # The page's own CSP (a report opened from disk has no HTTP headers): without img-src
    # data: the browser shows a broken image where the photo is.
    page = Page(render_summary(make_result(), make_advisor(), generated_at=WHEN))
    (csp,) = [
        a["content"] for t, a in page.elements if a.get("http-equiv") == "Content-Security-Policy"
    ]
    directives = dict(d.strip().split(" ", 1) for d in (csp or "").split(";") if d.strip())
    assert directives["img-src"] == "data:" and directives["default-src"] == "'none'"


def test_without_images_no_img_is_written() -> None:
    for html in all_pages(make_result(), make_advisor(), MEANS).values():
        assert "<img" not in html


def test_exemplars_are_thumbnails_with_their_scores_not_hashes() -> None:
    from mondrian.reports.thumbnails import EXEMPLAR_SIDE, ReportImages, thumbnail_uri

    thumb = thumbnail_uri(_jpeg((800, 600), (10, 90, 200)), EXEMPLAR_SIDE)
    images = ReportImages(exemplars={"ab" * 32: thumb})
    html = render_detailed(make_result(), make_advisor(), generated_at=WHEN, images=images)
    page = Page(html)
    cells = [attrs for tag, attrs in page.elements if tag == "img"]
    assert [c["src"] for c in cells] == [thumb] and cells[0]["alt"] == "Moonrise, Hernandez"
    assert max(_decoded(thumb).size) == EXEMPLAR_SIDE
    assert ("ab" * 6) + "</code>" not in html  # the hash is not shown when the picture is
    row = html[html.index('class="exemplar"') :].split("</tr>", 1)[0]
    assert row.count('<td class="num">7</td>') == len(DIMENSIONS) and "0.912" in row


def test_an_exemplar_without_a_stored_image_keeps_its_hash() -> None:
    html = render_detailed(make_result(), make_advisor(), generated_at=WHEN)
    assert f'<code title="{"ab" * 32}">{"ab" * 6}</code>' in html


def test_report_images_from_the_stored_images(db, settings) -> None:
    from mondrian.reports.thumbnails import report_images
    from mondrian.storage import images as image_store

    data = _jpeg((400, 300), (1, 2, 3))
    stored = db.write(image_store.store_image, settings.images_dir, data, "image/jpeg", 400, 300)
    images = report_images(
        db, settings.images_dir, photo_hash=stored, exemplar_hashes=[stored, "cd" * 32]
    )
    assert images.photo is not None and _decoded(images.photo).size == (400, 300)
    # The unknown hash is left out; the report renders with its hash instead.
    assert list(images.exemplars) == [stored]


def test_tokens_per_second_is_a_rate_not_seconds() -> None:
    timings = {"generate_s": 2.5, "tokens_per_s": 15.53, "retrieval_ms": 42.0}
    text = Page(
        render_detailed(make_result(timings=timings), make_advisor(), generated_at=WHEN)
    ).text
    assert "Tokens per second 15.5" in " ".join(text.split())
    assert "15.53 s" not in text and "Tokens per " + "—" not in text
    assert "Generate 2.50 s" in " ".join(text.split())


def _evaluation(examples: int) -> dict:
    variant = {
        "name": "base",
        "count": examples,
        "valid_rate": 1.0,
        "stop_rate": 1.0,
        "mean_mae": 1.0,
        "overall_mae": 1.0,
        "latency_p50_s": 0.4,
        "latency_p95_s": 0.5,
        "tokens_per_s": 30.0,
        "mae": dict.fromkeys(DIMENSIONS, 1.37),
        "mse": dict.fromkeys(DIMENSIONS, 2.0),
        "spearman": dict.fromkeys(DIMENSIONS, 0.5),
    }
    return {
        "advisor_id": "ansel",
        "adapter": "ansel@v1",
        "split": "validation",
        "dataset": {"path": "/data/set", "examples": examples},
        "model": {"model": "tiny"},
        "variants": [variant, {**variant, "name": "adapter"}],
        "per_example": [],
        "created_at": WHEN.isoformat(),
        "mondrian_version": "0",
        "prompt_version": "1",
        "schema_version": "1",
        "config": {},
    }


@pytest.mark.parametrize(("examples", "shown"), [(1, "1 example<"), (3, "3 examples<")])
def test_the_evaluation_page_counts_examples_in_english(tmp_path, examples, shown) -> None:
    from mondrian.evaluation.metrics import write_eval_report

    html = write_eval_report(_evaluation(examples), "Ansel", tmp_path / "e.html").read_text()
    assert shown in html


def test_chart_ticks_are_round_numbers() -> None:
    from mondrian.reports.charts import grouped_bars, nice_ticks

    assert nice_ticks(2.37) == [0, 1, 2, 3]
    assert nice_ticks(0.59) == [0, 0.2, 0.4, 0.6]
    assert nice_ticks(10) == [0, 2.5, 5, 7.5, 10]
    svg = str(grouped_bars(["a", "b"], {"base": [0.59, 0.1]}))
    ticks = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert ticks == ["0.0", "0.2", "0.4", "0.6"]


def _text_boxes(svg: str) -> list[tuple[float, float, float, float]]:
    """Each horizontal <text>'s box, estimated as charts.py estimates it; slanted ones are
    checked apart (their rotation keeps them apart by construction)."""
    boxes = []
    for x, y, size, anchor, rest, text in re.findall(
        r'<text x="([\d.]+)" y="([\d.]+)" font-size="(\d+)"(?: text-anchor="(\w+)")?'
        r'( transform="[^"]+")?>([^<]*)</text>',
        svg,
    ):
        if rest:
            continue
        width = len(text) * float(size) * 0.6
        x0 = float(x) - {"end": width, "middle": width / 2}.get(anchor, 0.0)
        boxes.append((x0, float(y) - float(size), x0 + width, float(y)))
    return boxes


def _text_px_slanted(text: str) -> float:
    import math

    return len(text) * 10 * 0.6 * math.cos(math.radians(35))


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_the_mae_chart_labels_do_not_overlap() -> None:
    from mondrian.reports.charts import grouped_bars

    labels = [DIMENSION_LABELS[key] for key in DIMENSIONS]
    svg = str(grouped_bars(labels, {"base": [1.0] * 8, "adapter": [0.5] * 8}))
    # The eight dimension names do not fit side by side under 74-px groups: slanted.
    assert svg.count('transform="rotate(-35') == len(labels)
    boxes = _text_boxes(svg)
    assert len(boxes) == 5 + 2  # ticks and legend, all horizontal
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _overlap(a, b), (a, b)
    # The first slanted label's far end stays inside the picture.
    first = re.search(
        r'<text x="([\d.]+)" y="[\d.]+" font-size="10" text-anchor="end" transform', svg
    )
    assert float(first.group(1)) - 1.25 * _text_px_slanted(labels[0]) >= 0
    # Slanted labels start below the axis and end above the legend.
    axis_y = float(re.search(r'<line x1="[\d.]+" y1="([\d.]+)"', svg).group(1))
    for y in re.findall(r'y="([\d.]+)" font-size="10" text-anchor="end" transform', svg):
        assert float(y) > axis_y


def test_short_labels_stay_horizontal_and_apart() -> None:
    from mondrian.reports.charts import grouped_bars

    svg = str(grouped_bars(["p50", "p95"], {"base": [0.4, 0.9], "adapter": [0.3, 0.8]}, width=360))
    assert "rotate(" not in svg
    boxes = _text_boxes(svg)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _overlap(a, b), (a, b)
