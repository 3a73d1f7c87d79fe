"""Reading photos: every bad input is an InvalidInput with a code, never anything else."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from mondrian.errors import InvalidInput, PayloadTooLarge
from mondrian.images import fit_pixels, read_image


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
