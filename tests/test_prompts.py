"""The "Measured:" block: a few compact lines from the facts, in every critique prompt that
has facts, and none where there are none."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mondrian.advisors import shipped_advisors
from mondrian.facts import measure
from mondrian.images import read_image_file
from mondrian.prompts import MEASURED_HEADER, critique_prompt, measured_block
from mondrian.schema import Fact

PHOTOS = Path(__file__).parent / "assets" / "photos"


def fact(name: str, value: float | str | list[float], unit: str = "") -> Fact:
    return Fact(name=name, value=value, unit=unit, meaning=name)


HAND = [
    fact("luminance_p05", 0.04, "share"),
    fact("luminance_p50", 0.41, "share"),
    fact("luminance_p95", 0.93, "share"),
    fact("shadows_clipped", 0.002, "share"),
    fact("highlights_clipped", 0.031, "share"),
    fact("zones", [0.01, 0.02, 0.05, 0.1, 0.2, 0.22, 0.2, 0.1, 0.05, 0.03, 0.02], "share"),
    fact("median_zone", 5.4, "zone"),
    fact("blur", 0.31, "share"),
    fact("subject_sharpness", 412.0),
    fact("tilt", -1.24, "degrees"),
    fact("subject_position", [0.34, 0.62], "share"),
    fact("subject_thirds_distance", 0.03, "share"),
    fact("subject_centre_distance", 0.15, "share"),
    fact("megapixels", 24.2, "MP"),
    fact("monochrome", "no"),
    fact("colourfulness", 42.3),
    fact("dominant_hues", [30.0, 210.0], "degrees"),
    fact("harmony_template", "I"),
    fact("harmony_fit", 0.82, "share"),
    fact("focal_length", 50.0, "mm"),
    fact("iso", 200.0),
]


def test_block_has_a_line_per_family_with_the_values() -> None:
    block = measured_block(HAND)
    lines = block.splitlines()
    assert lines[0] == MEASURED_HEADER
    assert [line.split(":")[0] for line in lines[1:]] == [
        "Exposure",
        "Zones 0-X",
        "Sharpness",
        "Geometry",
        "Colour",
        "Camera",
    ]
    assert "p5/p50/p95 0.04/0.41/0.93" in block
    assert "highlights clipped 3.1%" in block
    assert "Zones 0-X: % 1 2 5 10 20 22 20 10 5 3 2, median 5.4" in block
    assert "blur 0.31" in block and "subject 412" in block
    assert "tilt -1.2 deg" in block and "subject at 0.34,0.62" in block
    assert "to thirds 0.03, to centre 0.15" in block
    assert "harmony I fit 82%" in block
    assert "50 mm" in block and "ISO 200" in block
    assert len(block) < 450  # short: every token is prompt a small model must see past


def test_no_facts_no_block_and_missing_families_are_left_out() -> None:
    assert measured_block([]) == ""
    only_tilt = measured_block([fact("tilt", 4.0, "degrees")])
    assert only_tilt.splitlines()[1:] == ["Geometry: tilt +4.0 deg"]
    mono = measured_block([fact("monochrome", "yes"), fact("harmony_template", "none")])
    assert mono.splitlines()[1:] == ["Colour: monochrome"]


def test_every_advisor_prompt_carries_the_block_before_the_answer_shape() -> None:
    image = Image.new("RGB", (8, 8))
    for advisor in shipped_advisors():
        user = critique_prompt(advisor, image, "CONTEXT", facts=HAND).user
        assert "Zones 0-X" in user
        assert user.index("CONTEXT") < user.index(MEASURED_HEADER) < user.index("single JSON")
        assert MEASURED_HEADER not in critique_prompt(advisor, image).user


def test_block_from_a_measured_photo() -> None:
    photo = read_image_file(PHOTOS / "chelsea.jpg")
    block = measured_block(measure(photo))
    for family in ("Exposure", "Zones 0-X", "Sharpness", "Geometry", "Colour"):
        assert f"\n{family}: " in block
    assert "{" not in block and "None" not in block
