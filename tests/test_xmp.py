"""XMP sidecars (reports/xmp.py): the stars of a score, the written XML parsed back, the
merge into a sidecar someone else wrote, and that the photo itself is never written."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from mondrian.errors import InvalidInput
from mondrian.reports import xmp

NS = {"x": xmp.X, "rdf": xmp.RDF, "xmp": xmp.XMP, "mondrian": xmp.MONDRIAN}
DARKTABLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    darktable:xmp_version="5"
    darktable:history_end="2">
   <darktable:history>
    <rdf:Seq><rdf:li darktable:operation="exposure" darktable:enabled="1"/></rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def rating(score: float = 8.0) -> xmp.Rating:
    return xmp.rating_of([score], ["ansel"])


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (10.0, 5),
        (9.0, 5),
        (8.99, 4),
        (7.5, 4),
        (7.0, 3),
        (6.0, 3),
        (5.9, 2),
        (4.0, 2),
        (3.9, 1),
        (0.0, 1),
    ],
)
def test_stars_follow_the_documented_thresholds(score, expected):
    assert xmp.stars(score) == expected


def test_a_score_off_the_scale_is_refused():
    with pytest.raises(InvalidInput):
        xmp.stars(10.5)
    with pytest.raises(InvalidInput):
        xmp.rating_of([], [])


def test_the_rating_of_several_advisors_is_their_mean():
    r = xmp.rating_of([9.5, 7.0], ["ansel", "fan_ho"])
    assert (r.stars, r.score, r.advisors) == (4, 8.25, ("ansel", "fan_ho"))


def test_a_new_sidecar_is_the_standard_layout():
    data = xmp.sidecar_xml(xmp.rating_of([9.2], ["ansel", "fan_ho"]))
    assert data.startswith('<?xpacket begin="\ufeff"'.encode())
    root = ET.fromstring(data)
    assert root.tag == f"{{{xmp.X}}}xmpmeta"
    desc = root.find("rdf:RDF/rdf:Description", NS)
    assert desc is not None
    assert desc.get(f"{{{xmp.XMP}}}Rating") == "5"
    assert desc.get(f"{{{xmp.MONDRIAN}}}OverallScore") == "9.20"
    assert desc.get(f"{{{xmp.MONDRIAN}}}Advisors") == "ansel,fan_ho"
    assert b"xmlns:xmp=" in data and b"xmp:Rating=" in data  # the usual prefix, for humans
    assert xmp.read_rating(data) == 5


def test_both_names_are_written_beside_the_photo_which_is_not_touched(tmp_path):
    photo = tmp_path / "IMG_1.jpg"
    photo.write_bytes(b"\xff\xd8 the original")
    os.utime(photo, (1_000_000, 1_000_000))
    written = xmp.write_sidecars(photo, rating(8.0))
    assert sorted(p.name for p in written) == ["IMG_1.jpg.xmp", "IMG_1.xmp"]
    for path in written:
        assert xmp.read_rating(path.read_bytes()) == 4
    assert photo.read_bytes() == b"\xff\xd8 the original"
    assert photo.stat().st_mtime == 1_000_000


def test_a_raw_and_jpeg_pair_keeps_the_stem_name_out(tmp_path):
    (tmp_path / "IMG_2.CR2").write_bytes(b"raw")
    photo = tmp_path / "IMG_2.jpg"
    photo.write_bytes(b"jpeg")
    written = xmp.write_sidecars(photo, rating())
    assert [p.name for p in written] == ["IMG_2.jpg.xmp"]
    assert not (tmp_path / "IMG_2.xmp").exists()


def test_darktables_sidecar_keeps_its_history_and_gains_the_rating(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    (tmp_path / "a.jpg.xmp").write_bytes(DARKTABLE)
    xmp.write_sidecars(photo, rating(6.5))
    data = (tmp_path / "a.jpg.xmp").read_bytes()
    root = ET.fromstring(data)
    desc = root.find("rdf:RDF/rdf:Description", NS)
    dt = "http://darktable.sf.net/"
    assert desc.get(f"{{{xmp.XMP}}}Rating") == "3"
    assert desc.get(f"{{{dt}}}history_end") == "2"
    assert desc.find(f"{{{dt}}}history/rdf:Seq/rdf:li", NS).get(f"{{{dt}}}operation") == "exposure"
    assert b"darktable:history" in data  # its prefix survives the rewrite
    assert root.get(f"{{{xmp.X}}}xmptk") == "XMP Core 4.4.0-Exiv2"


def test_a_rating_set_by_hand_is_refused_unless_forced(tmp_path):
    photo = tmp_path / "b.jpg"
    photo.write_bytes(b"x")
    sidecar = tmp_path / "b.xmp"
    sidecar.write_bytes(DARKTABLE.replace(b'darktable:xmp_version="5"', b'xmp:Rating="2"'))
    before = sidecar.read_bytes()
    with pytest.raises(xmp.SidecarConflict, match="already rates this photo 2"):
        xmp.write_sidecars(photo, rating(9.5))
    assert sidecar.read_bytes() == before
    assert not (tmp_path / "b.jpg.xmp").exists()  # a conflict writes nothing at all
    xmp.write_sidecars(photo, rating(9.5), force=True)
    assert xmp.read_rating(sidecar.read_bytes()) == 5


def test_mondrians_own_rating_is_updated_without_force(tmp_path):
    photo = tmp_path / "c.jpg"
    photo.write_bytes(b"x")
    xmp.write_sidecars(photo, rating(9.5))
    xmp.write_sidecars(photo, rating(4.5))
    assert xmp.read_rating((tmp_path / "c.xmp").read_bytes()) == 2


def test_the_element_form_of_the_rating_is_updated_in_place():
    data = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        b"<xmp:Rating>0</xmp:Rating></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    merged = xmp.merge_rating(data, rating(7.6), name="d.xmp")
    desc = ET.fromstring(merged).find("rdf:RDF/rdf:Description", NS)
    assert desc.find("xmp:Rating", NS).text == "4"
    assert f"{{{xmp.XMP}}}Rating" not in desc.attrib


@pytest.mark.parametrize("junk", [b"not xml at all", b"<html><body>hi</body></html>"])
def test_a_sidecar_that_is_not_xmp_is_never_overwritten(tmp_path, junk):
    photo = tmp_path / "e.jpg"
    photo.write_bytes(b"x")
    (tmp_path / "e.xmp").write_bytes(junk)
    for force in (False, True):
        with pytest.raises(xmp.SidecarConflict, match="left as it is"):
            xmp.write_sidecars(photo, rating(), force=force)
    assert (tmp_path / "e.xmp").read_bytes() == junk
