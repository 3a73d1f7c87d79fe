"""measure(): the contract's names in order, their units, sane values on the shipped photos
and on degenerate images, and bad files refused as read_image refuses them."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from facts_scenes import SAMPLES, facts, photo
from PIL import Image

from mondrian.errors import InvalidInput
from mondrian.facts import FACTS, FACTS_VERSION, measure
from mondrian.images import PhotoExif, read_image

PIXEL_FACTS = [spec.name for spec in FACTS if spec.kind != "exif"]
SHARES = [
    s.name for s in FACTS if s.unit == "share" and s.name not in ("zones", "subject_position")
]


def test_the_names_are_the_contracts_in_order_and_exif_is_left_out_when_absent():
    measured = measure(photo(Image.new("RGB", (64, 48), (90, 120, 30))))
    assert [f.name for f in measured] == PIXEL_FACTS
    assert PIXEL_FACTS[:3] == ["luminance_p05", "luminance_p50", "luminance_p95"]
    assert FACTS_VERSION == "1"
    by_name = {s.name: s for s in FACTS}
    assert all(f.unit == by_name[f.name].unit and f.meaning for f in measured)


def test_exif_facts_come_as_numbers_with_their_units():
    image = photo(Image.new("RGB", (64, 48), (90, 120, 30)))
    exif = PhotoExif(camera="Canon EOS R5", aperture="f/2.8", exposure="1/250 s", iso=400,
                     focal_length="50 mm", taken_at="2024:05:01 10:00:00")  # fmt: skip
    measured = {f.name: f for f in measure(type(image)(**{**image.__dict__, "exif": exif}))}
    assert measured["focal_length"].value == 50.0 and measured["focal_length"].unit == "mm"
    assert measured["aperture"].value == 2.8 and measured["shutter"].value == 0.004
    assert measured["iso"].value == 400.0 and measured["camera"].value == "Canon EOS R5"
    assert measured["captured"].value == "2024:05:01 10:00:00"
    assert list(measured)[-6:] == ["focal_length", "aperture", "shutter", "iso", "camera",
                                   "captured"]  # fmt: skip


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.jpg")), ids=lambda p: p.stem)
def test_every_shipped_photo_measures_within_its_units(path):
    values = facts(Image.open(path).convert("RGB"))
    assert all(0.0 <= values[name] <= 1.0 for name in SHARES), values
    assert abs(sum(values["zones"]) - 1.0) < 1e-3 and len(values["zones"]) == 11
    assert values["luminance_p05"] <= values["luminance_p50"] <= values["luminance_p95"]
    assert 0 <= values["median_zone"] <= 10 and -90 <= values["tilt"] <= 90
    assert all(0 <= v <= 1 for v in values["subject_position"])
    assert values["monochrome"] in ("yes", "no") and len(values["dominant_hues"]) <= 3
    assert values["harmony_template"] in ("i", "V", "L", "I", "T", "Y", "X", "none")


@pytest.mark.parametrize(
    "size", [(1, 50), (50, 1), (1, 1), (3, 3), (200, 100)], ids=lambda s: f"{s[0]}x{s[1]}"
)
def test_slivers_and_constant_images_give_sane_values(size):
    values = facts(Image.new("RGB", size, (128, 128, 128)))
    assert values["sharpness"] == 0 and values["subject_sharpness"] == 0
    assert values["blur"] == 1.0 and values["noise"] == 0 and values["tilt"] == 0
    assert values["subject_position"] == [0.5, 0.5] and values["subject_centre_distance"] == 0
    assert values["monochrome"] == "yes" and values["colourfulness"] == 0
    assert values["harmony_template"] == "none" and values["median_zone"] == 5.0
    assert values["zones"][5] == 1.0


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "empty_file"), (b"hello, not a photo", "not_an_image")],
)
def test_bad_files_are_refused_before_measuring_with_read_images_codes(data, code):
    with pytest.raises(InvalidInput) as info:
        measure(read_image(data))
    assert info.value.code == code


def test_a_truncated_file_is_refused_as_today():
    buf = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(buf, "JPEG")
    with pytest.raises(InvalidInput) as info:
        measure(read_image(buf.getvalue()[:2000]))
    assert info.value.code == "truncated_image"


def test_importing_the_facts_does_not_import_opencv():
    code = "import sys, mondrian, mondrian.facts; print('cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
