"""Star ratings from critiques, as XMP sidecars that Lightroom and darktable read.

A rating is `xmp:Rating` (0 to 5) on the `rdf:Description` of an `x:xmpmeta` packet, the
layout of the XMP specification, with Mondrian's own fields beside it in its namespace
(the score, the advisors, the rating it wrote). The original photo is never opened for
writing: the rating goes into sidecar files beside it, under both names in use:

- `IMG_1.jpg.xmp` (the full name + `.xmp`): darktable and digiKam;
- `IMG_1.xmp` (the stem + `.xmp`): Lightroom Classic, Bridge and Capture One. Lightroom
  reads a sidecar only for raw files; for JPEG, TIFF and DNG it reads metadata from the file
  itself, which is never touched, so a JPEG's rating reaches darktable, not Lightroom. When
  another photo in the folder has the same stem (a RAW+JPEG pair), the stem name is left
  out: it would be the other file's sidecar too.

An existing sidecar is merged, not replaced: its other metadata stays, and the rating is
set only where it has none, where Mondrian wrote the one there (`mondrian:Rating` equals
`xmp:Rating`), or with `force`; a rating someone set by hand otherwise refuses with
`SidecarConflict`. A sidecar that is not XMP is never overwritten. docs/xmp.md has the
star thresholds (`STARS`) and these rules.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mondrian.errors import InvalidInput, MondrianError
from mondrian.images import IMAGE_SUFFIXES
from mondrian.staging import write_atomic

X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP = "http://ns.adobe.com/xap/1.0/"
MONDRIAN = "urn:x-mondrian:critique:1.0/"
PREFIXES = {"x": X, "rdf": RDF, "xmp": XMP, "mondrian": MONDRIAN}

# The lowest overall score (0-10) that earns each rating, best first; below the last, 1
# star. Never 0 (unrated) or -1 (rejected): a critiqued photo is rated.
STARS: tuple[tuple[float, int], ...] = ((9.0, 5), (7.5, 4), (6.0, 3), (4.0, 2))
PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
PACKET_END = '\n<?xpacket end="w"?>\n'


class SidecarConflict(MondrianError):
    code = "sidecar_conflict"
    http_status = 409


@dataclass(frozen=True)
class Rating:
    """What a sidecar records of one photo's critiques."""

    stars: int
    score: float  # the overall score it was read from (a mean over several advisors)
    advisors: tuple[str, ...]


def stars(score: float) -> int:
    """The star rating of an overall score on the 0-10 scale (thresholds in `STARS`)."""
    if not 0.0 <= score <= 10.0:
        raise InvalidInput(f"an overall score is between 0 and 10, got {score}")
    return next((n for lowest, n in STARS if score >= lowest), 1)


def rating_of(scores: Iterable[float], advisors: Iterable[str]) -> Rating:
    """One photo's rating from its critiques' overall scores (the mean of several)."""
    values = list(scores)
    if not values:
        raise InvalidInput("no overall score to rate the photo from")
    mean = sum(values) / len(values)
    return Rating(stars=stars(mean), score=round(mean, 2), advisors=tuple(advisors))


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _fields(rating: Rating) -> dict[str, str]:
    return {
        _q(XMP, "Rating"): str(rating.stars),
        _q(MONDRIAN, "Rating"): str(rating.stars),
        _q(MONDRIAN, "OverallScore"): f"{rating.score:.2f}",
        _q(MONDRIAN, "Advisors"): ",".join(rating.advisors),
    }


def _serialise(root: ET.Element) -> bytes:
    for prefix, uri in PREFIXES.items():
        ET.register_namespace(prefix, uri)
    body = ET.tostring(root, encoding="unicode")
    return (PACKET_BEGIN + body + PACKET_END).encode("utf-8")


def sidecar_xml(rating: Rating) -> bytes:
    """A new sidecar holding only the rating and Mondrian's fields."""
    root = ET.Element(_q(X, "xmpmeta"))
    rdf = ET.SubElement(root, _q(RDF, "RDF"))
    ET.SubElement(rdf, _q(RDF, "Description"), {_q(RDF, "about"): "", **_fields(rating)})
    return _serialise(root)


def _parse(data: bytes, name: str) -> ET.Element:
    """The packet's root; its namespace prefixes registered so they survive a rewrite."""
    try:
        for _event, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            # ns0, ns1... are ElementTree's own names for prefixes it was not told.
            if prefix and prefix not in PREFIXES and not re.fullmatch(r"ns\d+", prefix):
                ET.register_namespace(prefix, uri)
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SidecarConflict(f"{name} is not XML ({exc}); it is left as it is") from None
    if root.tag == _q(RDF, "RDF"):
        return root  # a bare rdf:RDF packet (no x:xmpmeta), also valid XMP
    if root.tag != _q(X, "xmpmeta") or root.find(_q(RDF, "RDF")) is None:
        raise SidecarConflict(f"{name} is not an XMP packet; it is left as it is")
    return root


def _value(desc: ET.Element, tag: str) -> str | None:
    if tag in desc.attrib:
        return desc.attrib[tag]
    child = desc.find(tag)
    return None if child is None else (child.text or "").strip()


def _set(desc: ET.Element, tag: str, value: str) -> None:
    child = desc.find(tag)
    if child is not None:  # the element form (<xmp:Rating>3</xmp:Rating>) stays elemental
        child.text = value
    else:
        desc.set(tag, value)


def merge_rating(existing: bytes, rating: Rating, *, name: str, force: bool = False) -> bytes:
    """The existing sidecar with the rating set and everything else kept (rules above)."""
    root = _parse(existing, name)
    rdf = root if root.tag == _q(RDF, "RDF") else root.find(_q(RDF, "RDF"))
    assert rdf is not None  # _parse checked
    descriptions = rdf.findall(_q(RDF, "Description"))
    if not descriptions:
        descriptions = [ET.SubElement(rdf, _q(RDF, "Description"), {_q(RDF, "about"): ""})]
    rated = [d for d in descriptions if _value(d, _q(XMP, "Rating")) is not None]
    target = rated[0] if rated else descriptions[0]
    current = _value(target, _q(XMP, "Rating"))
    ours = _value(target, _q(MONDRIAN, "Rating"))
    if current not in (None, "", "0", ours, str(rating.stars)) and not force:
        raise SidecarConflict(
            f"{name} already rates this photo {current} (not set by Mondrian); "
            "--force replaces the rating and keeps the rest of the sidecar"
        )
    for tag, value in _fields(rating).items():
        _set(target, tag, value)
    return _serialise(root)


def sidecar_paths(photo: Path) -> list[Path]:
    """Where a photo's sidecars go (module docstring): `name.ext.xmp`, and `name.xmp`
    unless another photo in its folder shares the stem."""
    paths = [photo.with_name(photo.name + ".xmp")]
    twins = [
        p
        for p in photo.parent.glob(f"{_glob_escape(photo.stem)}.*")
        if p.name != photo.name and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not twins:
        paths.append(photo.with_suffix(".xmp"))
    return paths


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def write_sidecars(photo: Path, rating: Rating, *, force: bool = False) -> list[Path]:
    """Write (or merge into) the photo's sidecars; the photo itself is only looked at.
    Every sidecar is checked before any is written, so a conflict writes nothing."""
    planned: list[tuple[Path, bytes]] = []
    for path in sidecar_paths(photo):
        if path.exists():
            data = merge_rating(path.read_bytes(), rating, name=str(path), force=force)
        else:
            data = sidecar_xml(rating)
        planned.append((path, data))
    for path, data in planned:
        write_atomic(path, data)
    return [path for path, _ in planned]


def read_rating(data: bytes) -> int | None:
    """The `xmp:Rating` a sidecar holds, or None (tests and the zip's readers use it)."""
    root = _parse(data, "sidecar")
    for desc in root.iter(_q(RDF, "Description")):
        value = _value(desc, _q(XMP, "Rating"))
        if value is not None:
            return int(value)
    return None


def sidecar_names(photo_name: str, stems_taken: set[str]) -> list[str]:
    """A photo's sidecar names (`name.ext.xmp`, and `name.xmp` when no other photo of the
    set has its stem): the same rule as `sidecar_paths`, for photos not on this disk."""
    name = Path(photo_name).name
    stem = Path(name).stem
    return [f"{name}.xmp"] + ([] if stem in stems_taken else [f"{stem}.xmp"])


def sidecar_zip(photos: list[tuple[str, Rating]]) -> bytes:
    """A zip of the sidecars of (photo file name, rating) pairs, to unpack beside the
    originals. A name given twice (two uploads called IMG_1.jpg) puts the later ones in
    folders of their own, `2/`, `3/`, so no sidecar is written over another."""
    stems = [Path(Path(name).name).stem for name, _ in photos]
    seen: dict[str, int] = {}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for (name, rating), stem in zip(photos, stems, strict=True):
            seen[name] = seen.get(name, 0) + 1
            folder = "" if seen[name] == 1 else f"{seen[name]}/"
            twins = {s for s in stems if s == stem} if stems.count(stem) > 1 else set()
            data = sidecar_xml(rating)
            for sidecar in sidecar_names(name, twins):
                archive.writestr(folder + sidecar, data)
    return out.getvalue()
