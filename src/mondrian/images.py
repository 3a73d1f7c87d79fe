"""Reading photographs safely: bounded size, bounded pixels, EXIF orientation applied.

Every image that enters Mondrian (upload, CLI path, portfolio file) goes through
`read_image`, so the checks and their error codes are the same everywhere.
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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Photo:
    """A decoded, upright RGB photo and the bytes it came from."""

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
    data: bytes, *, max_bytes: int = 25 * 1024 * 1024, max_pixels: int = 100_000_000
) -> Photo:
    """Decode `data` fully or raise InvalidInput with a code naming the problem."""
    if not data:
        raise InvalidInput("the image file is empty", code="empty_file")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the image is {len(data)} bytes; the limit is {max_bytes}", code="file_too_large"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
    except Image.DecompressionBombError as exc:
        # Pillow refuses to even open an image claiming over twice its own pixel limit.
        raise PayloadTooLarge(
            f"the image has more pixels than the limit of {max_pixels}: {exc}",
            code="too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            "the file is not an image Mondrian can read", code="not_an_image"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the image could not be read: {exc}", code="not_an_image") from None
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            code="too_many_pixels",
        )
    try:
        # Pillow's own bomb guard is a warning below 2x its limit; ours is the check above.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = upright.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(str(exc), code="too_many_pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(
            f"the image is truncated or corrupt: {exc}", code="truncated_image"
        ) from None
    mime = MIME_BY_FORMAT.get(fmt)
    if mime is None:
        raise InvalidInput(f"unsupported image format {fmt or 'unknown'}", code="not_an_image")
    return Photo(image=rgb, data=data, mime=mime, sha256=hashlib.sha256(data).hexdigest())


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
    return image.resize(size, Image.Resampling.LANCZOS)
