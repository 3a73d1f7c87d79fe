"""A critique as PDF (`mondrian export JOB --format pdf`): the photo, the scores, the checks
that found the critique contradicting a measurement, the words, and the measured facts.

fpdf2 (pure Python) draws it on A4. Its built-in fonts (Helvetica) cover Latin-1 only, and
Mondrian ships no font file, so text outside Latin-1 is written in its nearest Latin-1 form
(typographic quotes and dashes as ASCII, accents kept where Latin-1 has them, anything else
as "?"); the Markdown export keeps every character.
"""

from __future__ import annotations

import io
import unicodedata

from PIL import Image

from mondrian.advisors.model import Advisor
from mondrian.reports.facts_view import format_value
from mondrian.reports.markdown import EXIF_LABELS, ExportFacts, check_label
from mondrian.reports.radar import DIMENSION_LABELS
from mondrian.schema import AnalysisResult

_ASCII = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
          "\u2026": "...", "\u00a0": " "}  # fmt: skip
_PHOTO_MM = 90  # the photo's longest side on the page
_MARGIN = 18
_BAR_MM = 80


def latin1(text: object) -> str:
    """`text` in the characters the built-in PDF fonts have (module docstring)."""
    out = []
    for char in str(text):
        char = _ASCII.get(char, char)
        if len(char) == 1 and ord(char) > 255:
            base = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode("latin-1")
            char = base or "?"
        if len(char) == 1 and not char.isprintable() and char != "\n":
            char = " "
        out.append(char)
    return "".join(out)


def render_pdf(
    result: AnalysisResult, advisor: Advisor, facts: ExportFacts, photo: Image.Image | None
) -> bytes:
    """The PDF's bytes. `photo` (the stored working copy) is drawn at the top if given."""
    from fpdf import FPDF

    if result.advisor_id != advisor.id:
        raise ValueError(f"result is by {result.advisor_id!r}, not {advisor.id!r}")
    critique = result.critique
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_created(facts.created_at))  # the same job exports the same bytes
    pdf.set_title(latin1(f"{facts.photo}, by {advisor.name}"))
    pdf.set_creator("Mondrian")
    pdf.set_margins(_MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, margin=_MARGIN)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    _para(pdf, 9, latin1(f"{facts.photo}, by {advisor.name}"))
    pdf.set_font("Helvetica", "", 10)
    _para(pdf, 5, latin1(_meta_line(result, facts)))
    pdf.ln(3)
    if photo is not None:
        _draw_photo(pdf, photo)
    pdf.set_font("Helvetica", "B", 14)
    grade = critique.overall_grade or ""
    pdf.cell(0, 8, latin1(f"Overall {critique.overall_score:.2f}/10   grade {grade}"))
    pdf.ln(9)
    pdf.set_font("Helvetica", "I", 11)
    _para(pdf, 5.5, latin1(critique.image_description))
    pdf.ln(3)
    _scores_table(pdf, result)
    _checks(pdf, result)
    for title, items in (("Strengths", critique.strengths), ("To improve", critique.improvements)):
        if items:
            _heading(pdf, title)
            pdf.set_font("Helvetica", "", 10)
            for item in items:
                _para(pdf, 5, latin1(f"- {item}"))
    _heading(pdf, "The eight dimensions")
    for key, dim in critique.dimensions.items():
        if pdf.get_y() > pdf.h - _MARGIN - 22:  # keep a dimension's head with its words
            pdf.add_page()
        pdf.set_font("Helvetica", "B", 10)
        _para(pdf, 5, latin1(f"{DIMENSION_LABELS[key]}: {dim.score}/10"))
        pdf.set_font("Helvetica", "", 10)
        _para(pdf, 5, latin1(dim.comment))
        _para(pdf, 5, latin1(f"Try: {dim.recommendation}"))
        pdf.ln(1.5)
    _facts(pdf, result)
    return bytes(pdf.output())


def _para(pdf, height: float, text: str) -> None:
    """A paragraph the page wide; the next one starts at the left margin below it."""
    pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")


def _created(created_at: str):
    from datetime import UTC, datetime

    try:
        return datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)


def _meta_line(result: AnalysisResult, facts: ExportFacts) -> str:
    parts = [f"job {facts.job_id}", f"mode {result.mode_used}", f"model {result.model.base}"]
    exif = [f"{EXIF_LABELS[k]} {facts.exif[k]}" for k in EXIF_LABELS if k in facts.exif]
    return " | ".join(parts + exif)


def _draw_photo(pdf, photo: Image.Image) -> None:
    # A JPEG of the working copy: fpdf2 embeds it as it is (DCT), no re-compression.
    buf = io.BytesIO()
    photo.convert("RGB").save(buf, "JPEG", quality=90)
    scale = _PHOTO_MM / max(photo.width, photo.height)
    width, height = photo.width * scale, photo.height * scale
    pdf.image(buf, x=_MARGIN, w=width, h=height, alt_text="the photo critiqued")
    pdf.ln(4)


def _heading(pdf, title: str) -> None:
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 7, latin1(title))
    pdf.ln(8)


def _scores_table(pdf, result: AnalysisResult) -> None:
    """A row per dimension: its name, its score and a bar of it (the reports' colours)."""
    pdf.set_font("Helvetica", "", 10)
    for key, dim in result.critique.dimensions.items():
        y = pdf.get_y()
        pdf.cell(55, 6, DIMENSION_LABELS[key])
        pdf.cell(18, 6, f"{dim.score}/10", align="R")
        x = pdf.get_x() + 5
        pdf.set_fill_color(226, 226, 226)
        pdf.rect(x, y + 1.5, _BAR_MM, 3, style="F")
        pdf.set_fill_color(*_band_colour(dim.score))
        if dim.score:
            pdf.rect(x, y + 1.5, _BAR_MM * dim.score / 10, 3, style="F")
        pdf.ln(6)


def _band_colour(score: int) -> tuple[int, int, int]:
    # report.css's --blue, --yellow, --red, by render.py's bands.
    if score >= 7.5:
        return (0x1F, 0x4E, 0x9C)
    return (0xE9, 0xB6, 0x00) if score >= 5 else (0xC8, 0x10, 0x2E)


def _checks(pdf, result: AnalysisResult) -> None:
    if not result.checks:
        return
    _heading(pdf, "Checks")
    pdf.set_font("Helvetica", "I", 9)
    _para(pdf, 4.5, "Where the critique contradicts a measurement; checks never change the scores.")
    pdf.set_font("Helvetica", "", 10)
    for check in result.checks:
        _para(pdf, 5, latin1(f"{check_label(check)}: {check.message}"))


def _facts(pdf, result: AnalysisResult) -> None:
    """A row per fact: its name and value, its meaning beside them in small type."""
    if not result.facts:
        return
    _heading(pdf, "Measured")
    pdf.set_font("Helvetica", "I", 9)
    _para(pdf, 4.5, "From the photo's pixels and EXIF, no model: the facts the model was shown.")
    for fact in result.facts:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(42, 4.5, latin1(fact.name))
        pdf.set_font("Helvetica", "", 9)
        _para(pdf, 4.5, latin1(f"{format_value(fact)}  -  {fact.meaning}"))
