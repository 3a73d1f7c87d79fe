"""Reading photographs safely: bounded bytes, pixels and decoding work, EXIF orientation
applied.

Every image that enters Mondrian (upload, CLI path, portfolio file) goes through
`read_image`, so the checks and their error codes are the same everywhere. The order
keeps the cost of a bad file small: only the allowed formats are even opened (Pillow's
`formats=`, so no other decoder, Ghostscript's included, ever sees the bytes), then the
header's size is checked, and only then are pixels decoded, once.

With `work_pixels` (the service's uploads) the photo is reduced to a working copy of at
most that many pixels: JPEGs while decoding (`draft()`, a 1/2 to 1/8 scale from the DCT),
the rest right after. The working copy's bytes are what the service stores and the worker
reads, so a 24 MP upload costs its full decode once, at upload, and never again.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from mondrian.errors import InvalidInput, PayloadTooLarge

MIME_BY_FORMAT = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}
# The decoders Pillow may run (an MPO is opened by the JPEG one and reports "MPO").
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ALLOWED_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
_DRAFTABLE = ("JPEG", "MPO")

# The Qwen-VL processors refuse a photo whose long side is over 200 times its short side
# (transformers' qwen2_vl `smart_resize` raises ValueError). Half of that leaves room for
# the rounding of every downscale on the way (ours, then smart_resize's), so a photo we
# accept is never refused by the model; real panoramas stay well under 100:1.
MAX_ASPECT = 100
# The smallest side the processors take without special-casing: patch size x merge size,
# 28 for Qwen2/2.5-VL, 32 for Qwen3-VL (older smart_resize versions raise below it).
MIN_SIDE = 32

# Magic bytes of image formats Mondrian refuses, to say which one was sent. Only the
# bytes are looked at: no decoder runs. TGA has no magic; Pillow writes its v2 footer.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"icns", "ICNS"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"SIMPLE  =", "FITS"),
    (b"\x01\xda", "SGI"),
    (b"#define", "XBM"),
    (b"/* XPM */", "XPM"),
    (b"Image type:", "IM"),
    (b"DanM", "MSP"),
    (b"LinS", "MSP"),
    *((b"P" + bytes([d]), "PNM") for d in b"1234567"),
    *((b"\x0a" + bytes([v]) + b"\x01", "PCX") for v in (0, 2, 3, 4, 5)),
)


@dataclass(frozen=True)
class Photo:
    """A decoded, upright RGB photo and the bytes it came from (with `work_pixels`: the
    bytes of the working copy, when it differs from the upload)."""

    image: Image.Image
    data: bytes
    mime: str
    sha256: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def read_image(
    data: bytes,
    *,
    max_bytes: int = 25 * 1024 * 1024,
    max_pixels: int = 100_000_000,
    max_decode_pixels: int | None = None,
    work_pixels: int | None = None,
    min_side: int = 1,
) -> Photo:
    """Decode `data` once, or raise InvalidInput with a code naming the problem.

    `max_pixels` bounds the size the header claims; `max_decode_pixels` the pixels actually
    decoded (after a JPEG's draft reduction); `work_pixels` asks for a working copy of at
    most that many pixels; `min_side` refuses slivers the model's processor cannot take."""
    if not data:
        raise InvalidInput("the image file is empty", code="empty_file")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the image is {len(data)} bytes; the limit is {max_bytes}", code="file_too_large"
        )
    try:
        # Pillow's own bomb guard is a warning below 2x its limit; ours are the checks below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # No `with`: closing the image would free the pixels `rgb` may share with it,
            # and an in-memory file needs no closing.
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            fmt = img.format or ""
            width, height = img.size
            _check_size(width, height, max_pixels, min_side)
            if work_pixels is not None and fmt in _DRAFTABLE:
                img.draft("RGB", _scaled(width, height, work_pixels))
            if max_decode_pixels is not None:
                _check_decode(img, width, height, max_decode_pixels)
            rgb, changed = _decode(img, work_pixels, (width, height))
    except Image.DecompressionBombError as exc:
        # Pillow refuses to even open an image claiming over twice its own pixel limit.
        raise PayloadTooLarge(
            f"the image has more pixels than the limit of {max_pixels}: {exc}",
            code="too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        raise _not_allowed(data) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(
            f"the image is truncated or corrupt: {exc}", code="truncated_image"
        ) from None
    mime = MIME_BY_FORMAT[fmt]
    if changed:
        data, mime = _encode(rgb, fmt)
    return Photo(image=rgb, data=data, mime=mime, sha256=hashlib.sha256(data).hexdigest())


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            code="too_many_pixels",
        )
    if min(width, height) < min_side:
        raise InvalidInput(
            f"the image is {width}x{height}; each side must be at least {min_side} pixels",
            code="image_too_small",
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidInput(
            f"the image is {width}x{height}, an aspect ratio over {MAX_ASPECT}:1 that the "
            "model cannot take",
            code="extreme_aspect_ratio",
        )


def _check_decode(img: Image.Image, width: int, height: int, limit: int) -> None:
    """Refuse, before decoding, an image whose decode (after any draft) is over `limit`."""
    pixels = img.width * img.height
    if pixels > limit:
        raise PayloadTooLarge(
            f"the image has {width}x{height} = {width * height} pixels; a {img.format} "
            f"is decoded in full and the limit for that is {limit}",
            code="too_many_pixels",
        )


def _decode(
    img: Image.Image, work_pixels: int | None, declared: tuple[int, int]
) -> tuple[Image.Image, bool]:
    """The upright RGB image (reduced to `work_pixels`), and whether it differs from what
    the bytes hold (a smaller size, an orientation applied), so that it is the copy to keep.

    One full-size copy of the pixels at a time: turned in place, and reduced before the
    conversion to RGB where the mode allows (a palette image must be converted first)."""
    img.load()
    orientation = img.getexif().get(0x0112, 1)
    ImageOps.exif_transpose(img, in_place=True)
    rgb: Image.Image = img
    if work_pixels is not None and img.mode in ("RGB", "RGBA", "RGBX", "L", "LA"):
        rgb = fit_pixels(rgb, work_pixels)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    if work_pixels is None:
        return rgb, False
    rgb = fit_pixels(rgb, work_pixels)
    return rgb, rgb.size != declared or orientation != 1


def _encode(image: Image.Image, fmt: str) -> tuple[bytes, str]:
    """The working copy's bytes: a JPEG stays a JPEG (it was lossy already), anything else
    becomes a PNG (lossless). Deterministic, so the same upload gets the same hash."""
    buf = io.BytesIO()
    if fmt in _DRAFTABLE:
        image.save(buf, "JPEG", quality=95)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, "PNG", compress_level=3)
    return buf.getvalue(), "image/png"


def _not_allowed(data: bytes) -> InvalidInput:
    head, tail = data[:16], data[-18:]
    # The footer first: a TGA's first bytes can look like a CUR's.
    name = "TGA" if tail.startswith(b"TRUEVISION-XFILE") else None
    name = name or next((name for magic, name in _OTHER_FORMATS if head.startswith(magic)), None)
    if name is None:
        return InvalidInput(
            f"the file is not an image Mondrian can read (it reads {ALLOWED_NAMES})",
            code="not_an_image",
        )
    return InvalidInput(
        f"{name} images are not accepted; send a {ALLOWED_NAMES} file",
        code="unsupported_format",
    )


def _scaled(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def read_image_file(path: Path, **limits: int) -> Photo:
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"no such file: {path}", code="file_not_found")
    if not path.is_file():
        raise InvalidInput(f"not a file: {path}", code="not_a_file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", code="unreadable") from None
    try:
        return read_image(data, **limits)
    except InvalidInput as exc:
        raise type(exc)(f"{path}: {exc.message}", code=exc.code) from None


def fit_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (never upscale) so that width * height <= max_pixels, keeping the aspect."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / pixels)
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    # reducing_gap: a cheap integer reduce first, then LANCZOS on the smaller image.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
