"""Small honest RAW files for the tests: a CFA (Bayer) DNG written tag by tag.

A DNG is a TIFF with a few more tags (DNG specification 1.4): the mosaic of sensor values
(PhotometricInterpretation 32803, CFA), its 2x2 RGGB pattern, the colour matrix and white
balance LibRaw needs to turn it into RGB, and the camera's EXIF. LibRaw reads it as it reads
a camera's DNG: demosaic, white balance, colour conversion. No other RAW format is written
here: CR2, CR3, NEF, ARW and RAF are proprietary containers with no writer to make them.
"""

from __future__ import annotations

import struct

import numpy as np

# TIFF field types: BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_SIZES = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _SRATIONAL: 8}


def _pack(kind: int, values) -> bytes:
    if kind == _ASCII:
        return values.encode() + b"\x00"
    if kind in (_RATIONAL, _SRATIONAL):
        code = "I" if kind == _RATIONAL else "i"
        return b"".join(struct.pack(f"<{code}{code}", n, d) for n, d in values)
    code = {_BYTE: "B", _SHORT: "H", _LONG: "I"}[kind]
    return struct.pack(f"<{len(values)}{code}", *values)


def _count(kind: int, values) -> int:
    return len(values) + 1 if kind == _ASCII else len(values)


def _ifd(tags: dict[int, tuple[int, object]], at: int) -> tuple[bytes, bytes]:
    """One IFD placed at offset `at`: its entries, then the values too long to inline."""
    entries, extra = [], b""
    extra_at = at + 2 + 12 * len(tags) + 4
    for tag in sorted(tags):
        kind, values = tags[tag]
        data = _pack(kind, values)
        if len(data) <= 4:
            field = data.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += data + (b"\x00" if len(data) % 2 else b"")
        entries.append(struct.pack("<HHI", tag, kind, _count(kind, values)) + field)
    return struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", 0), extra


def bayer_dng(
    width: int = 128,
    height: int = 96,
    *,
    rgb: tuple[float, float, float] = (0.8, 0.4, 0.2),
    orientation: int = 1,
    make: str = "Mondrian",
    model: str = "Test DNG",
    iso: int = 200,
    exposure: tuple[int, int] = (1, 125),
    aperture: tuple[int, int] = (56, 10),
    focal: tuple[int, int] = (35, 1),
    taken: str = "2024:05:01 10:30:00",
    preview: tuple[int, int, bytes] | None = None,
) -> bytes:
    """A 16-bit RGGB mosaic of one colour (`rgb`, 0..1 of the white level) with a gradient,
    so the demosaiced photo is that colour and not flat.

    `preview` (width, height, JPEG bytes) is embedded as cameras embed theirs: IFD0 becomes
    the preview (NewSubFileType 1, JPEG-compressed) and the mosaic moves to a SubIFD."""
    white = 4095
    ramp = np.linspace(0.6, 1.0, width)[None, :] * np.ones((height, 1))
    plane = np.empty((height, width), dtype=np.uint16)
    r, g, b = (int(c * white) for c in rgb)
    plane[0::2, 0::2] = (r * ramp[0::2, 0::2]).astype(np.uint16)
    plane[0::2, 1::2] = (g * ramp[0::2, 1::2]).astype(np.uint16)
    plane[1::2, 0::2] = (g * ramp[1::2, 0::2]).astype(np.uint16)
    plane[1::2, 1::2] = (b * ramp[1::2, 1::2]).astype(np.uint16)
    pixels = plane.astype("<u2").tobytes()
    exif_tags = {
        0x829A: (_RATIONAL, [exposure]),
        0x829D: (_RATIONAL, [aperture]),
        0x8827: (_SHORT, [iso]),
        0x9003: (_ASCII, taken),
        0x920A: (_RATIONAL, [focal]),
        0xA434: (_ASCII, "Test Lens 35mm"),
    }
    camera: dict[int, tuple[int, object]] = {
        271: (_ASCII, make),
        272: (_ASCII, model),
        274: (_SHORT, [orientation]),
        306: (_ASCII, taken),
        0x8769: (_LONG, [0]),  # the EXIF IFD's offset, filled in below
        50706: (_BYTE, [1, 4, 0, 0]),
        50708: (_ASCII, f"{make} {model}"),
        50721: (_SRATIONAL, [(n, 10000) for n in (10000, 0, 0, 0, 10000, 0, 0, 0, 10000)]),
        50728: (_RATIONAL, [(1, 1), (1, 1), (1, 1)]),
        50778: (_SHORT, [21]),  # CalibrationIlluminant1: D65
    }
    mosaic: dict[int, tuple[int, object]] = {
        254: (_LONG, [0]),
        256: (_LONG, [width]),
        257: (_LONG, [height]),
        258: (_SHORT, [16]),
        259: (_SHORT, [1]),
        262: (_SHORT, [32803]),
        273: (_LONG, [0]),  # the pixels' offset, filled in below
        277: (_SHORT, [1]),
        278: (_LONG, [height]),
        279: (_LONG, [len(pixels)]),
        284: (_SHORT, [1]),
        33421: (_SHORT, [2, 2]),
        33422: (_BYTE, [0, 1, 1, 2]),
        50717: (_LONG, [white]),
    }
    if preview is None:
        ifds = [{**mosaic, **camera}]
    else:
        p_width, p_height, jpeg = preview
        first = {
            254: (_LONG, [1]),
            256: (_LONG, [p_width]),
            257: (_LONG, [p_height]),
            258: (_SHORT, [8, 8, 8]),
            259: (_SHORT, [7]),
            262: (_SHORT, [6]),
            273: (_LONG, [0]),  # the JPEG's offset, filled in below
            277: (_SHORT, [3]),
            278: (_LONG, [p_height]),
            279: (_LONG, [len(jpeg)]),
            284: (_SHORT, [1]),
            330: (_LONG, [0]),  # the mosaic's IFD, filled in below
            **camera,
        }
        ifds = [first, mosaic]
    # Layout as cameras write it: header, the IFDs and their values, the EXIF IFD, then data.
    # Offsets are inline LONGs, so filling them in changes no length: two passes suffice.
    for _ in range(2):
        at, blocks, starts = 8, [], []
        for tags in ifds:
            starts.append(at)
            entries, extra = _ifd(tags, at)
            blocks.append(entries + extra)
            at += len(entries) + len(extra)
        exif_at = at
        exif_entries, exif_extra = _ifd(exif_tags, exif_at)
        data_at = exif_at + len(exif_entries) + len(exif_extra)
        ifds[0][0x8769] = (_LONG, [exif_at])
        ifds[-1][273] = (_LONG, [data_at])
        if preview is not None:
            ifds[0][273] = (_LONG, [data_at + len(pixels)])
            ifds[0][330] = (_LONG, [starts[1]])
    head = b"II*\x00" + struct.pack("<I", 8) + b"".join(blocks) + exif_entries + exif_extra
    return head + pixels + (b"" if preview is None else preview[2])
