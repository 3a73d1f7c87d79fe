"""Reading photos: every bad input is an InvalidInput with a code, never anything else."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from mondrian.errors import InvalidInput, PayloadTooLarge
from mondrian.images import ALLOWED_FORMATS, MAX_ASPECT, MIN_SIDE, fit_pixels, read_image


def _jpeg(size=(64, 48), color=(200, 40, 40), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", **save)
    return buf.getvalue()


def _noisy_jpeg() -> bytes:
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "limits", "error", "code"),
    [
        (b"", {}, InvalidInput, "empty_file"),
        (b"hello, not a photo", {}, InvalidInput, "not_an_image"),
        (_noisy_jpeg()[:2000], {}, InvalidInput, "truncated_image"),
        (_jpeg(), {"max_bytes": 100}, PayloadTooLarge, "file_too_large"),
        (_jpeg((64, 48)), {"max_pixels": 1000}, PayloadTooLarge, "too_many_pixels"),
        (_png_header_claiming(20000, 20000), {}, PayloadTooLarge, "too_many_pixels"),
        (
            _png_header_claiming(100_000, 100_000),
            {"max_pixels": 10**12},
            PayloadTooLarge,
            "too_many_pixels",
        ),
    ],
    ids=["empty", "text", "truncated", "bytes", "pixels", "bomb-100mp", "bomb-pillow-guard"],
)
def test_bad_images_get_a_coded_error(data, limits, error, code):
    with pytest.raises(error) as info:
        read_image(data, **limits)
    assert info.value.code == code


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    photo = read_image(_jpeg((80, 40), exif=exif))
    assert (photo.width, photo.height) == (40, 80)
    assert photo.mime == "image/jpeg" and len(photo.sha256) == 64


def test_fit_pixels_downscales_only():
    big = Image.new("RGB", (400, 300))
    small = fit_pixels(big, 30_000)
    assert small.width * small.height <= 30_000
    assert abs(small.width / small.height - 4 / 3) < 0.05
    assert fit_pixels(big, 10**6) is big


def _saved(fmt: str, size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, format=fmt)
    return buf.getvalue()


# A PSD's header (Pillow reads PSD but cannot write it): signature, version 1, 3 channels,
# 48 x 64, 8 bits, RGB, then empty colour-mode, resource and layer sections.
_PSD = b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 48, 64, 8, 3) + b"\x00" * 12
_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\nshowpage\n"

# The names Mondrian gives them, and Pillow's.
PILLOW_NAMES = {"PNM": "PPM", "JPEG 2000": "JPEG2000"}
REFUSED_FORMATS = {
    "PSD": _PSD,
    "EPS": _EPS,
    "ICO": _saved("ICO"),
    "PNM": _saved("PPM"),
    "TGA": _saved("TGA"),
    "PCX": _saved("PCX"),
    "JPEG 2000": _saved("JPEG2000"),
    "SGI": _saved("SGI"),
    "QOI": _saved("QOI"),
    "DDS": _saved("DDS"),
    "XBM": _saved("XBM", mode="1"),
    "ICNS": _saved("ICNS"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_FORMATS))
def test_other_formats_are_refused_by_name_before_any_decoder_runs(name, monkeypatch):
    data = REFUSED_FORMATS[name]
    if name not in ("PSD", "EPS"):
        # A real file of its kind: Pillow, left to itself, would open it.
        assert Image.open(io.BytesIO(data)).format == PILLOW_NAMES.get(name, name)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda fp, *a, **kw: opened.append(kw["formats"]) or real_open(fp, *a, **kw)
    )
    with pytest.raises(InvalidInput) as info:
        read_image(data)
    assert info.value.code == "unsupported_format"
    assert name in info.value.message and "JPEG, PNG" in info.value.message
    assert opened == [ALLOWED_FORMATS]  # only the allowed decoders were asked


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_are_read(fmt):
    photo = read_image(_saved(fmt))
    assert (photo.width, photo.height, photo.image.mode) == (64, 48, "RGB")


@pytest.mark.parametrize(
    ("size", "code"),
    [
        ((1, 100_000), "image_too_small"),
        ((100_000, 1), "image_too_small"),
        ((3, 30_000), "image_too_small"),
        ((40, 4_040), "extreme_aspect_ratio"),
        ((4_040, 40), "extreme_aspect_ratio"),
        ((31, 31), "image_too_small"),
    ],
)
def test_slivers_are_refused_from_the_header(size, code):
    # Header-only PNGs: the checks run before any pixel would be decoded.
    with pytest.raises(InvalidInput) as info:
        read_image(_png_header_claiming(*size), min_side=MIN_SIDE)
    assert info.value.code == code
    assert f"{size[0]}x{size[1]}" in info.value.message


def test_extreme_aspect_is_refused_whatever_the_caller():
    with pytest.raises(InvalidInput) as info:
        read_image(_png_header_claiming(1, 100_000))
    assert info.value.code == "extreme_aspect_ratio"
    assert read_image(_saved("PNG", (32, 32 * MAX_ASPECT))).height == 32 * MAX_ASPECT


def test_a_jpeg_is_reduced_while_decoding_into_its_working_copy():
    data = _jpeg((4000, 3000), quality=80)
    photo = read_image(data, work_pixels=100_000, max_decode_pixels=200_000)
    assert photo.width * photo.height <= 100_000
    assert abs(photo.width / photo.height - 4 / 3) < 0.02
    # The kept bytes are the working copy's, not the upload's.
    assert photo.mime == "image/jpeg" and len(photo.data) < len(data)
    again = read_image(photo.data)
    assert (again.width, again.height) == (photo.width, photo.height)
    assert read_image(data, work_pixels=100_000).sha256 == photo.sha256  # deterministic


def test_the_decode_limit_refuses_a_full_decode_but_not_a_draft():
    png = _saved("PNG", (600, 500))
    with pytest.raises(PayloadTooLarge) as info:
        read_image(png, work_pixels=10_000, max_decode_pixels=200_000)
    assert info.value.code == "too_many_pixels" and "600x500" in info.value.message
    # The same size as a JPEG decodes at 1/4 scale (150 x 125): under the limit.
    assert read_image(_jpeg((600, 500)), work_pixels=10_000, max_decode_pixels=200_000)


def test_a_small_upright_upload_keeps_its_own_bytes():
    data = _jpeg((80, 40))
    photo = read_image(data, work_pixels=10**6)
    assert photo.data == data


def test_the_working_copy_is_upright():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _jpeg((80, 40), exif=exif)
    photo = read_image(data, work_pixels=10**6)
    assert photo.data != data  # turned, so re-encoded without the tag
    again = read_image(photo.data)
    assert (again.width, again.height) == (40, 80)
