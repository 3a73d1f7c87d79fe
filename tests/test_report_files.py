"""Per-job report files (reports/files.py), the index and the comparison page: names that
never collide, hostile names shown as text, links only to the folder's own pages."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from mondrian.advisors import get_shipped
from mondrian.reports.comparison import render_comparison, write_comparison
from mondrian.reports.files import job_stem, photo_slug, read_manifest, write_job_reports
from mondrian.schema import AnalysisResult, ModelInfo, example_critique

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(1)>.jpg'


def result_for(advisor_id: str, job_id: str, score: int = 7) -> AnalysisResult:
    advisor = get_shipped(advisor_id)
    return AnalysisResult(
        job_id=job_id,
        advisor_id=advisor_id,
        mode_requested="baseline",
        mode_used="baseline",
        model=ModelInfo(base="tiny"),
        critique=example_critique(score).scored(advisor.weights),
    )


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.hrefs: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            self.attrs.append(name)
            if name == "href":
                self.hrefs.append(value)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("chelsea.jpg", "chelsea"),
        ("Été à Paris.HEIC", "Ete-a-Paris"),
        ("../../etc/passwd", "passwd"),
        ("日本.jpg", "photo"),
        (HOSTILE, "script-img-src-x-onerror-alert-1"),  # a "/" in it: the part after
        ("a" * 200 + ".jpg", "a" * 60),
    ],
)
def test_photo_slugs_are_safe_file_names(name, slug):
    assert photo_slug(name) == slug


def test_a_taken_stem_falls_back_to_the_whole_job_id(tmp_path):
    job = "3f2a9c1b7d4e" + "0" * 20
    assert job_stem(tmp_path, "cat.jpg", job) == "cat-3f2a9c1b7d4e"
    (tmp_path / "cat-3f2a9c1b7d4e-summary.html").write_text("an earlier critique")
    assert job_stem(tmp_path, "cat.jpg", job) == f"cat-{job}"


def test_job_reports_and_the_index_show_hostile_names_as_text(tmp_path):
    out = tmp_path / "r"
    paths = write_job_reports(result_for("ansel", "a" * 32), get_shipped("ansel"), out, HOSTILE)
    assert {p.name for p in paths.values()} == {
        f"{photo_slug(HOSTILE)}-aaaaaaaaaaaa-summary.html",
        f"{photo_slug(HOSTILE)}-aaaaaaaaaaaa-detailed.html",
        "advisor-ansel.html",
        "index.html",
    }
    index = paths["index"].read_text()
    parser = Links()
    parser.feed(index)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert not any(a.startswith("on") for a in parser.attrs)
    assert "script&gt;&lt;img src=x onerror=alert(1)&gt;.jpg" in index
    # Links, and only to the folder's own pages.
    assert sorted(parser.hrefs) == sorted([paths["summary"].name, paths["detailed"].name])
    assert [e.photo for e in read_manifest(out)] == ["script><img src=x onerror=alert(1)>.jpg"]


def test_the_comparison_sets_the_advisors_side_by_side(tmp_path):
    out = tmp_path / "r"
    pairs = [
        (result_for("ansel", "a" * 32, score=8), get_shipped("ansel")),
        (result_for("fan_ho", "b" * 32, score=5), get_shipped("fan_ho")),
    ]
    for result, advisor in pairs:
        write_job_reports(result, advisor, out, "cat.jpg")
    path = write_comparison(out, "cat.jpg", pairs)

    html = path.read_text()
    assert path.name == "cat-aaaaaaaaaaaa-comparison.html"
    rows = re.findall(r'<tr data-dimension="composition"><td>Composition</td>(.*?)</tr>', html)
    assert rows == ["<td><strong>8</strong></td><td>5</td>"]  # the higher score in bold
    for result, _ in pairs:
        assert f"{result.critique.overall_score:.2f}" in html
        assert result.critique.overall_grade in html
    parser = Links()
    parser.feed(html)
    assert parser.hrefs == []  # the page itself loads and links nothing
    assert {e.comparison for e in read_manifest(out)} == {path.name}
    assert (out / "index.html").read_text().count(f'href="{path.name}"') == 2


def test_a_comparison_needs_two_critiques_of_their_own_advisors():
    ansel = get_shipped("ansel")
    with pytest.raises(ValueError):
        render_comparison("cat.jpg", [(result_for("ansel", "a" * 32), ansel)])
    with pytest.raises(ValueError):
        render_comparison(
            "cat.jpg",
            [(result_for("ansel", "a" * 32), ansel), (result_for("fan_ho", "b" * 32), ansel)],
        )
