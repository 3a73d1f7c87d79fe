"""`mondrian export JOB --format md|pdf`: the critique's words and scores, and the photo."""

from __future__ import annotations

import re
import zlib

import pytest

from job_helpers import done_job
from mondrian.cli.main import main
from mondrian.schema import DIMENSION_LABELS, Check, Fact, example_critique
from mondrian.storage import jobs

EXIF = {"camera": "Canon EOS R5", "lens": "RF50mm F1.8 STM", "iso": 400, "aperture": "f/8"}


def pdf_texts(data: bytes) -> list[str]:
    """The strings a PDF's content streams show (`(...) Tj`), its streams inflated."""
    texts = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            body = zlib.decompress(match[1])
        except zlib.error:
            continue  # an image (DCT) or another stream that is not Flate
        for shown in re.finditer(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", body):
            texts.append(re.sub(rb"\\(.)", rb"\1", shown[1]).decode("latin-1"))
    return texts


@pytest.fixture
def job(db, settings):
    critique = example_critique(6).model_copy(
        update={"image_description": "A cat \u2014 with <b>bold</b> eyes | and a pipe."}
    )
    return done_job(db, settings, "fan_ho", "Chelsea cat.jpg", exif=EXIF, critique=critique)


def test_markdown_has_the_scores_the_words_and_the_exif(job, tmp_path, capsys):
    out = tmp_path / "c.md"
    assert main(["export", job.id[:12], "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    md = out.read_text()
    critique = job.analysis().critique
    assert md.startswith("# Chelsea cat.jpg, by Fan Ho\n")
    assert f"**Overall {critique.overall_score:.2f}/10, grade {critique.overall_grade}**" in md
    for key, dim in critique.dimensions.items():
        assert f"| {DIMENSION_LABELS[key]} | {dim.score}/10 | {dim.comment} |" in md
    assert "&lt;b&gt;bold&lt;/b&gt;" in md and "<b>" not in md  # shows as text
    assert "- Tonal separation between rock and sky." in md
    assert "- Camera: Canon EOS R5" in md and "- ISO: 400" in md
    assert f"- Job: {job.id}" in md


def test_markdown_to_stdout_and_the_default_file_name(job, tmp_path, monkeypatch, capsys):
    assert main(["export", job.id, "--out", "-"]) == 0
    assert capsys.readouterr().out.startswith("# Chelsea cat.jpg")
    monkeypatch.chdir(tmp_path)
    assert main(["export", job.id]) == 0
    assert (tmp_path / f"Chelsea-cat-{job.id[:12]}.md").is_file()


def test_pdf_has_the_photo_the_scores_and_the_words(job, tmp_path):
    out = tmp_path / "c.pdf"
    assert main(["export", job.id, "--format", "pdf", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert re.search(rb"/Subtype\s*/Image", data) and b"/DCTDecode" in data  # the photo
    text = "\n".join(pdf_texts(data))
    critique = job.analysis().critique
    assert "Chelsea cat.jpg, by Fan Ho" in text
    assert f"Overall {critique.overall_score:.2f}/10   grade {critique.overall_grade}" in text
    # The em dash in Latin-1 form; the rest as written.
    assert "A cat - with <b>bold</b> eyes | and a pipe." in text
    for key, dim in critique.dimensions.items():
        assert f"{DIMENSION_LABELS[key]}: {dim.score}/10" in text
    assert "Clear structure with a strong diagonal." in text
    assert "Camera Canon EOS R5" in text
    again = tmp_path / "again.pdf"
    assert main(["export", job.id, "--format", "pdf", "--out", str(again)]) == 0
    assert again.read_bytes() == data  # the same job, the same bytes


FACTS = [
    Fact(name="highlights_clipped", value=0.082, unit="share", meaning="Highlights <blown>."),
    Fact(name="tilt", value=-3.25, unit="degrees", meaning="The dominant line's lean | tilt."),
    Fact(name="camera", value="Canon EOS R5", unit="", meaning="The camera."),
]
CHECKS = [
    Check(
        rule="lighting_score_highlights_clipped",
        dimension="lighting",
        facts=["highlights_clipped"],
        message="Lighting scored 9/10, but 8% of the pixels are clipped white \u2014 blown.",
    )
]


@pytest.fixture
def measured_job(db, settings):
    return done_job(db, settings, "ansel", "cat.jpg", facts=FACTS, checks=CHECKS)


def test_markdown_has_the_checks_and_the_facts(measured_job, tmp_path):
    out = tmp_path / "m.md"
    assert main(["export", measured_job.id, "--out", str(out)]) == 0
    md = out.read_text()
    checks = md.index("## Checks")
    assert checks < md.index("## Measured") < md.index("## About this critique")
    assert "1 check found the critique contradicting a measurement" in md
    assert (
        "- **Lighting** (`lighting_score_highlights_clipped`): Lighting scored 9/10, but 8% "
        "of the pixels are clipped white \u2014 blown."
    ) in md
    # Formatted as the HTML reports show them; a cell's | escaped, HTML shown as text.
    assert "| `highlights_clipped` | 8.2% | Highlights &lt;blown&gt;. |" in md
    assert "| `tilt` | -3.25 degrees | The dominant line's lean \\| tilt. |" in md
    assert "| `camera` | Canon EOS R5 | The camera. |" in md


def test_markdown_without_facts_has_neither_section(job, tmp_path):
    out = tmp_path / "plain.md"
    assert main(["export", job.id, "--out", str(out)]) == 0
    md = out.read_text()
    assert "## Checks" not in md and "## Measured" not in md


def test_pdf_has_the_checks_and_the_facts(measured_job, job, tmp_path):
    out = tmp_path / "m.pdf"
    assert main(["export", measured_job.id, "--format", "pdf", "--out", str(out)]) == 0
    text = pdf_texts(out.read_bytes())
    joined = "\n".join(text)
    assert "Checks" in text and "Measured" in text
    # The em dash in its Latin-1 form, as the rest of the PDF writes it.
    message = "Lighting scored 9/10, but 8% of the pixels are clipped white - blown."
    assert f"Lighting: {message}" in joined
    assert "highlights_clipped" in text and "8.2%  -  Highlights <blown>." in joined
    assert "-3.25 degrees  -  The dominant line's lean | tilt." in joined
    plain = tmp_path / "plain.pdf"
    assert main(["export", job.id, "--format", "pdf", "--out", str(plain)]) == 0
    assert "Measured" not in pdf_texts(plain.read_bytes())


@pytest.mark.parametrize(
    ("ref", "message"),
    [("ffffffffffff", "no job"), ("xyz", "first 6 or more"), ("running", "only a done one")],
)
def test_export_refuses_what_it_cannot_export(db, settings, job, ref, message, capsys):
    if ref == "running":
        running = db.write(jobs.create_job, "ansel", job.image_hash, "baseline", "m")
        db.write(jobs.start_job, running.id)
        ref = running.id
    assert main(["export", ref]) == 2
    assert message in capsys.readouterr().err
