"""Reading photos: every bad input is an InvalidInput with a code, never anything else;
HEIC and RAW (a DNG written by tests/raw_samples.py) read with their EXIF."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from mondrian.errors import InvalidInput, PayloadTooLarge
from mondrian.images import (
    ALLOWED_FORMATS,
    IMAGE_SUFFIXES,
    MAX_ASPECT,
    MIN_SIDE,
    PhotoExif,
    fit_pixels,
    kept_exif,
    read_image,
)
from raw_samples import bayer_dng


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


# --- photographers' files: HEIC, RAW, EXIF ---------------------------------------------------


def _camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    sub = exif.get_ifd(0x8769)
    sub[0x8827] = 400
    sub[0x829A] = 0.004  # 1/250 s
    sub[0x829D] = 8.0
    sub[0x920A] = 50.0
    sub[0xA434] = "RF50mm F1.8 STM\x00\x07"  # control characters never reach a report
    sub[0x9003] = "2024:05:01 10:30:00"
    exif.get_ifd(0x8825)[1] = "N"  # GPS: not Mondrian's to keep
    return exif


CAMERA = PhotoExif(
    camera="Canon EOS R5",
    lens="RF50mm F1.8 STM",
    exposure="1/250 s",
    aperture="f/8",
    iso=400,
    focal_length="50 mm",
    taken_at="2024:05:01 10:30:00",
)


def _heic(size=(80, 40), exif: Image.Exif | None = None) -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    buf = io.BytesIO()
    extra = {} if exif is None else {"exif": exif.tobytes()}
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="HEIF", quality=90, **extra)
    return buf.getvalue()


def test_exif_facts_are_read_and_kept_in_the_working_copy():
    photo = read_image(_jpeg((80, 40), exif=_camera_exif(orientation=6)), work_pixels=10**6)
    assert photo.exif == CAMERA
    assert (photo.width, photo.height) == (40, 80)
    again = read_image(photo.data)  # the working copy carries the same facts, upright
    assert again.exif == CAMERA and (again.width, again.height) == (40, 80)
    kept = Image.open(io.BytesIO(photo.data)).getexif()
    assert 0x0112 not in kept and 0x8825 not in kept  # no orientation left, no GPS


def test_kept_exif_is_only_the_facts():
    kept = Image.Exif()
    kept.load(kept_exif(_camera_exif()).tobytes())  # as a working copy's reader sees it
    assert sorted(kept) == [0x010F, 0x0110, 0x8769]
    assert sorted(kept.get_ifd(0x8769)) == sorted([0x8827, 0x829A, 0x829D, 0x920A, 0xA434, 0x9003])


def test_a_heic_is_read_upright_with_its_exif_and_becomes_a_jpeg():
    photo = read_image(_heic(exif=_camera_exif(orientation=6)))
    assert photo.mime == "image/jpeg" and photo.data[:2] == b"\xff\xd8"
    assert (photo.width, photo.height) == (40, 80)
    r, g, b = photo.image.getpixel((20, 40))
    assert r > 150 and g < 80 and b < 80
    assert photo.exif.camera == "Canon EOS R5" and photo.exif.iso == 400
    assert read_image(photo.data).exif == photo.exif


def test_a_heic_is_bounded_like_any_photo():
    data = _heic((600, 500))
    with pytest.raises(PayloadTooLarge) as info:
        read_image(data, max_pixels=1000)
    assert info.value.code == "too_many_pixels"
    with pytest.raises(PayloadTooLarge) as info:  # decoded in full: the decode limit applies
        read_image(data, work_pixels=10_000, max_decode_pixels=200_000)
    assert "HEIF is decoded in full" in info.value.message
    small = read_image(data, work_pixels=10_000)
    assert small.width * small.height <= 10_000


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_a_broken_heic_is_a_coded_error(cut):
    data = _heic((200, 100))
    with pytest.raises(InvalidInput) as info:
        read_image(data[: int(len(data) * cut)])
    assert info.value.code == "truncated_image" and "HEIC" in info.value.message


def test_a_dng_is_developed_at_half_size_with_its_exif():
    photo = read_image(bayer_dng(128, 96, orientation=6, rgb=(0.8, 0.4, 0.2)))
    # LibRaw's half-size decode of the 128x96 mosaic, turned by the DNG's orientation.
    assert (photo.width, photo.height) == (48, 64) and photo.mime == "image/jpeg"
    r, g, b = photo.image.getpixel((24, 32))
    assert r > g and r > b  # the mosaic's red dominates
    assert photo.exif == PhotoExif(
        camera="Mondrian Test DNG",
        lens="Test Lens 35mm",
        exposure="1/125 s",
        aperture="f/5.6",
        iso=200,
        focal_length="35 mm",
        taken_at="2024:05:01 10:30:00",
    )
    assert read_image(photo.data).exif == photo.exif
    reduced = read_image(bayer_dng(256, 192), work_pixels=2000)
    assert reduced.width * reduced.height <= 2000


def test_a_dng_is_bounded_before_libraw_unpacks_it(monkeypatch):
    import rawpy

    data = bayer_dng(256, 192)
    unpacked = []

    class Watched:  # rawpy's type cannot be patched: a stand-in that records the unpack
        def __init__(self, raw):
            self.raw = raw

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.raw.close()

        def __getattr__(self, name):
            if name == "postprocess":
                unpacked.append(name)
            return getattr(self.raw, name)

    real_imread = rawpy.imread
    monkeypatch.setattr(rawpy, "imread", lambda fp: Watched(real_imread(fp)))
    assert read_image(data) and unpacked == ["postprocess"]  # the stand-in sees it
    unpacked.clear()
    with pytest.raises(PayloadTooLarge) as info:
        read_image(data, max_pixels=40_000)
    assert info.value.code == "too_many_pixels" and "256x192" in info.value.message
    with pytest.raises(PayloadTooLarge) as info:
        read_image(data, max_decode_pixels=10_000)  # half size is 128x96 = 12,288
    assert "DNG is decoded at half size" in info.value.message
    with pytest.raises(InvalidInput) as info:
        read_image(bayer_dng(24, 200), min_side=MIN_SIDE)
    assert info.value.code == "image_too_small"
    assert unpacked == []


@pytest.mark.parametrize("keep", [0.5, 0.2])
def test_a_truncated_dng_is_a_coded_error(keep):
    data = bayer_dng(256, 192)
    with pytest.raises(InvalidInput) as info:
        read_image(data[: int(len(data) * keep)])
    assert info.value.code == "truncated_image" and "DNG" in info.value.message


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"FUJIFILMCCD-RAW 0201FF383501", "RAF"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01", "CR3"),
    ],
)
def test_other_raw_containers_are_sent_to_libraw_and_refused_when_broken(head, kind):
    with pytest.raises(InvalidInput) as info:
        read_image(head + b"\x00" * 64)
    assert info.value.code == "truncated_image" and kind in info.value.message


def test_cr2_is_known_by_its_tiff_marker():
    cr2 = b"II*\x00\x10\x00\x00\x00CR\x02\x00" + b"\x00" * 64
    with pytest.raises(InvalidInput) as info:
        read_image(cr2)
    assert info.value.code == "truncated_image" and "CR2" in info.value.message


def test_photographers_suffixes_are_image_files():
    assert {".heic", ".heif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf"} <= IMAGE_SUFFIXES


def _preview(size=(120, 90)) -> tuple[int, int, bytes]:
    """A green JPEG with a red top-left corner, to see which way it was turned."""
    image = Image.new("RGB", size, (30, 200, 40))
    image.paste((220, 20, 20), (0, 0, size[0] // 4, size[1] // 4))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return (*size, buf.getvalue())


def test_a_raws_large_embedded_preview_is_used_and_turned_upright():
    photo = read_image(bayer_dng(128, 96, orientation=6, preview=_preview()))
    # The preview (120x90, green), not the red mosaic, turned as EXIF orientation 6 says:
    # 90 degrees clockwise, so its top-left corner is now the top-right one.
    assert (photo.width, photo.height) == (90, 120)
    assert photo.image.getpixel((45, 60))[1] > 150
    assert photo.image.getpixel((85, 5))[0] > 150 and photo.image.getpixel((5, 5))[0] < 100
    assert photo.exif.camera == "Mondrian Test DNG"  # the RAW's own EXIF, not the preview's


def test_a_raws_small_preview_gives_way_to_a_half_size_decode():
    photo = read_image(bayer_dng(128, 96, preview=_preview((40, 30))))
    assert (photo.width, photo.height) == (64, 48)
    r, g, b = photo.image.getpixel((32, 24))
    assert r > g and r > b  # the mosaic, not the green preview
    # With a small working copy wanted, the same small preview is enough.
    assert (
        read_image(bayer_dng(128, 96, preview=_preview((40, 30))), work_pixels=1000).image.getpixel(
            (5, 20)
        )[1]
        > 150
    )


def test_a_preview_over_the_decode_limit_is_not_decoded():
    data = bayer_dng(128, 96, preview=_preview((120, 90)))  # 10,800 pixels; half size 3,072
    photo = read_image(data, max_decode_pixels=5000)
    assert (photo.width, photo.height) == (64, 48)  # the half-size mosaic instead
    with pytest.raises(PayloadTooLarge):
        read_image(data, max_decode_pixels=3000)  # and neither fits
