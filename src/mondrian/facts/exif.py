"""EXIF facts, from the text `mondrian.images.PhotoExif` keeps ("50 mm", "f/2.8", "1/250 s"):
numbers where the unit allows, leaving out what the photo does not carry."""

from __future__ import annotations

import re

from mondrian.images import PhotoExif

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _number(text: str | None) -> float | None:
    found = _NUMBER.search(text or "")
    return float(found.group()) if found else None


def _seconds(text: str | None) -> float | None:
    """ "1/250 s" -> 0.004, "2 s" -> 2.0."""
    if not text:
        return None
    fraction = re.fullmatch(r"\s*1/(\d+(?:\.\d+)?)\s*s?\s*", text)
    if fraction:
        return round(1 / float(fraction.group(1)), 6)
    return _number(text)


def exif_facts(exif: PhotoExif) -> dict[str, float | str]:
    found: dict[str, float | str | None] = {
        "focal_length": _number(exif.focal_length),
        "aperture": _number(exif.aperture),
        "shutter": _seconds(exif.exposure),
        "iso": None if exif.iso is None else float(exif.iso),
        "camera": exif.camera,
        "captured": exif.taken_at,
    }
    return {name: value for name, value in found.items() if value is not None}
