"""Reading photographs safely: bounded bytes, pixels and decoding work, EXIF orientation
applied, the EXIF a photographer cares about kept.

Over 400 lines, for one reason: every photo, whatever its container (Pillow's formats, HEIF
through pillow-heif, RAW through rawpy/LibRaw), passes the same checks in this one module,
so a bound cannot be forgotten on one path.

Every image that enters Mondrian (upload, CLI path, portfolio file) goes through
`read_image`, so the checks and their error codes are the same everywhere. The order
keeps the cost of a bad file small: only the allowed formats are even opened (Pillow's
`formats=`, so no other decoder, Ghostscript's included, ever sees the bytes), then the
header's size is checked, and only then are pixels decoded, once.

With `work_pixels` (the service's uploads) the photo is reduced to a working copy of at
most that many pixels: JPEGs while decoding (`draft()`, a 1/2 to 1/8 scale from the DCT),
the rest right after. The working copy's bytes are what the service stores and the worker
reads, so a 24 MP upload costs its full decode once, at upload, and never again.

HEIC/HEIF (iPhones) goes through the same Pillow path, its decoder registered only when the
bytes are HEIF. RAW files (DNG, CR2, CR3, NEF, ARW, RAF) are recognised by their bytes before
Pillow sees them (a NEF or DNG is a TIFF whose first image is a thumbnail or a mosaic) and go
to LibRaw: its embedded JPEG preview when that is large enough, else a `half_size` decode (a
quarter of the sensor's pixels, 8-bit); the size its header claims is checked first, so a
full 16-bit unpack beyond `max_pixels` never starts. HEIF and RAW always become a JPEG
working copy, the format every browser, report and processor reads.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from mondrian.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    import rawpy

MIME_BY_FORMAT = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
    "HEIF": "image/jpeg",  # always re-encoded (module docstring)
}
# The decoders Pillow may run (an MPO is opened by the JPEG one and reports "MPO"); HEIF
# joins them only for bytes that are HEIF (`_is_heif`).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ALLOWED_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or RAW (DNG, CR2, CR3, NEF, ARW, RAF)"
RAW_SUFFIXES = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf"}
IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif",
    *RAW_SUFFIXES,
}  # fmt: skip
_DRAFTABLE = ("JPEG", "MPO")
# Formats whose working copy is always a new JPEG, whatever its size and orientation.
_REENCODED = ("HEIF", "RAW")
# The major brands of HEIF still images (ISO/IEC 23008-12); iPhones write `heic`.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}

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


# EXIF tags kept: IFD0's, then the EXIF sub-IFD's (CIPA DC-008).
_MAKE, _MODEL, _DATETIME, _ORIENTATION, _EXIF_IFD = 0x010F, 0x0110, 0x0132, 0x0112, 0x8769
_EXPOSURE, _FNUMBER, _ISO, _TAKEN, _FOCAL = 0x829A, 0x829D, 0x8827, 0x9003, 0x920A
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434
_KEPT_IFD0 = (_MAKE, _MODEL, _DATETIME)
_KEPT_EXIF = (_EXPOSURE, _FNUMBER, _ISO, _TAKEN, _FOCAL, _LENS_MAKE, _LENS_MODEL)


@dataclass(frozen=True)
class PhotoExif:
    """What a photographer reads in EXIF, as text fit to print (control characters gone,
    at most 100 characters: it is whatever the file says)."""

    camera: str | None = None
    lens: str | None = None
    exposure: str | None = None
    aperture: str | None = None
    iso: int | None = None
    focal_length: str | None = None
    taken_at: str | None = None

    def as_dict(self) -> dict[str, str | int]:
        """The fields present, in a stable order."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Photo:
    """A decoded, upright RGB photo and the bytes it came from (with `work_pixels`: the
    bytes of the working copy, when it differs from the upload; the working copy keeps the
    EXIF of `exif`)."""

    image: Image.Image
    data: bytes
    mime: str
    sha256: str
    exif: PhotoExif = PhotoExif()

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
    raw_kind = _raw_kind(data)
    if raw_kind is not None:
        rgb, exif = read_raw(data, raw_kind, max_pixels, max_decode_pixels, work_pixels, min_side)
        return _photo(rgb, _encode(rgb, "RAW", exif), exif)
    formats = ALLOWED_FORMATS
    if _is_heif(data):
        _register_heif()
        formats = ("HEIF",)
    try:
        # Pillow's own bomb guard is a warning below 2x its limit; ours are the checks below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # No `with`: closing the image would free the pixels `rgb` may share with it,
            # and an in-memory file needs no closing.
            img = Image.open(io.BytesIO(data), formats=formats)
            fmt = img.format or ""
            width, height = img.size
            _check_size(width, height, max_pixels, min_side)
            if work_pixels is not None and fmt in _DRAFTABLE:
                img.draft("RGB", _scaled(width, height, work_pixels))
            if max_decode_pixels is not None:
                _check_decode(img, width, height, max_decode_pixels)
            exif = img.getexif()
            rgb, changed = _decode(img, work_pixels, (width, height))
    except Image.DecompressionBombError as exc:
        # Pillow refuses to even open an image claiming over twice its own pixel limit.
        raise PayloadTooLarge(
            f"the image has more pixels than the limit of {max_pixels}: {exc}",
            code="too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        if formats == ("HEIF",):  # HEIF by its header, yet libheif cannot read it
            raise InvalidInput(
                "the HEIC/HEIF file is truncated or corrupt", code="truncated_image"
            ) from None
        raise _not_allowed(data) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(
            f"the image is truncated or corrupt: {exc}", code="truncated_image"
        ) from None
    if changed or fmt in _REENCODED:
        return _photo(rgb, _encode(rgb, fmt, exif), exif)
    return _photo(rgb, (data, MIME_BY_FORMAT[fmt]), exif)


def _photo(rgb: Image.Image, encoded: tuple[bytes, str], exif: Image.Exif) -> Photo:
    data, mime = encoded
    return Photo(
        image=rgb,
        data=data,
        mime=mime,
        sha256=hashlib.sha256(data).hexdigest(),
        exif=exif_facts(exif),
    )


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


def _encode(image: Image.Image, fmt: str, exif: Image.Exif) -> tuple[bytes, str]:
    """The working copy's bytes: a JPEG stays a JPEG (it was lossy already), and so do a
    HEIF and a RAW (module docstring); anything else becomes a PNG (lossless). The kept EXIF
    goes with them, without the orientation (the pixels are upright now). Deterministic, so
    the same upload gets the same hash."""
    buf = io.BytesIO()
    kept = kept_exif(exif).tobytes()
    if fmt in _DRAFTABLE or fmt in _REENCODED:
        image.save(buf, "JPEG", quality=95, exif=kept)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, "PNG", compress_level=3, exif=kept)
    return buf.getvalue(), "image/png"


def kept_exif(exif: Image.Exif) -> Image.Exif:
    """A new EXIF block holding only the tags `PhotoExif` reads: no thumbnail, no maker
    notes, no GPS (an upload's location is not Mondrian's to keep)."""
    kept = Image.Exif()
    for tag in _KEPT_IFD0:
        if tag in exif:
            kept[tag] = exif[tag]
    sub = exif.get_ifd(_EXIF_IFD)
    if any(tag in sub for tag in _KEPT_EXIF):
        kept_sub = kept.get_ifd(_EXIF_IFD)
        for tag in _KEPT_EXIF:
            if tag in sub:
                kept_sub[tag] = sub[tag]
    return kept


def exif_facts(exif: Image.Exif) -> PhotoExif:
    """The EXIF a photographer reads, from a Pillow EXIF block (absent tags stay None)."""
    sub = exif.get_ifd(_EXIF_IFD)
    make, model = _text(exif.get(_MAKE)), _text(exif.get(_MODEL))
    # Many cameras repeat the make in the model ("Canon" / "Canon EOS R5").
    camera = model if make and model and model.lower().startswith(make.lower()) else None
    camera = camera or " ".join(p for p in (make, model) if p) or None
    lens = _text(sub.get(_LENS_MODEL)) or _text(sub.get(_LENS_MAKE))
    exposure = _number(sub.get(_EXPOSURE))
    aperture = _number(sub.get(_FNUMBER))
    focal = _number(sub.get(_FOCAL))
    iso = sub.get(_ISO)
    iso = iso[0] if isinstance(iso, tuple) and iso else iso
    return PhotoExif(
        camera=camera,
        lens=lens,
        exposure=None if not exposure else _exposure_text(exposure),
        aperture=None if not aperture else f"f/{aperture:g}",
        iso=iso if isinstance(iso, int) and iso > 0 else None,
        focal_length=None if not focal else f"{focal:g} mm",
        taken_at=_text(sub.get(_TAKEN)) or _text(exif.get(_DATETIME)),
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if c.isprintable()).strip()
    return text[:100] or None


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _exposure_text(seconds: float) -> str:
    if seconds < 1:
        return f"1/{round(1 / seconds)} s"
    return f"{seconds:g} s"


def _is_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _register_heif() -> None:
    # Imported here: pillow-heif's C library loads only for a HEIF. Registering twice is
    # harmless (it replaces its own opener).
    from pillow_heif import register_heif_opener

    register_heif_opener(thumbnails=False)


def _raw_kind(data: bytes) -> str | None:
    """The RAW format the bytes are, or None: from the bytes alone, no decoder run."""
    if data.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if data[4:12] == b"ftypcrx ":
        return "CR3"
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    if data[8:10] == b"CR":
        return "CR2"
    ifd0 = tiff_ifd0(data)
    if 50706 in ifd0:  # DNGVersion
        return "DNG"
    make = (_text(ifd0.get(_MAKE)) or "").upper()
    # A NEF or ARW keeps its sensor data in a SubIFD (tag 330), which a plain TIFF from
    # those cameras' software does not have.
    if 330 in ifd0 and make.startswith("NIKON"):
        return "NEF"
    if 330 in ifd0 and make.startswith("SONY"):
        return "ARW"
    return None


def tiff_ifd0(data: bytes) -> Image.Exif:
    """A TIFF's first IFD, tags only (Pillow's tag reader, no decoder); empty if unreadable."""
    exif = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a broken tag is found below, not warned of
            exif.load(data)
            exif.get_ifd(_EXIF_IFD)  # read now, so a broken sub-IFD fails here
    except (OSError, ValueError, SyntaxError, KeyError, struct.error):
        return Image.Exif()
    return exif


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


# --- RAW, through rawpy (LibRaw) -------------------------------------------------------------

# LibRaw's `flip` (dcraw's) -> the turn that makes a preview upright.
_FLIPS = {
    3: Image.Transpose.ROTATE_180,
    5: Image.Transpose.ROTATE_90,
    6: Image.Transpose.ROTATE_270,
}


def read_raw(
    data: bytes,
    kind: str,
    max_pixels: int,
    max_decode_pixels: int | None,
    work_pixels: int | None,
    min_side: int,
) -> tuple[Image.Image, Image.Exif]:
    """A RAW file's upright RGB image and its EXIF, within the same bounds as any photo."""
    import rawpy  # its C library loads only for a RAW

    try:
        raw = rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise _broken_raw(kind, exc) from None
    with raw:
        try:
            return _develop(raw, data, kind, max_pixels, max_decode_pixels, work_pixels, min_side)
        except (rawpy.LibRawError, OSError, ValueError, SyntaxError) as exc:
            raise _broken_raw(kind, exc) from None


def _broken_raw(kind: str, exc: Exception) -> InvalidInput:
    detail = str(exc).strip("b'\"") or type(exc).__name__
    return InvalidInput(
        f"the {kind} file is truncated or corrupt: {detail}", code="truncated_image"
    )


def _develop(
    raw: rawpy.RawPy,
    data: bytes,
    kind: str,
    max_pixels: int,
    max_decode_pixels: int | None,
    work_pixels: int | None,
    min_side: int,
) -> tuple[Image.Image, Image.Exif]:
    """The checks, then the preview or the half-size decode (module docstring)."""
    sizes = raw.sizes
    # The sensor's whole area is what an unpack allocates (16 bits a photosite).
    if sizes.raw_width * sizes.raw_height > max_pixels:
        _check_size(sizes.raw_width, sizes.raw_height, max_pixels, 1)
    turned = sizes.flip in (5, 6)
    width, height = (sizes.height, sizes.width) if turned else (sizes.width, sizes.height)
    _check_size(width, height, max_pixels, min_side)
    # TIFF-based RAWs carry their EXIF in IFD0; CR3 and RAF only in their preview's JPEG.
    exif = tiff_ifd0(data) if kind not in ("CR3", "RAF") else Image.Exif()
    # The preview is enough when it holds what the working copy (or a half-size decode,
    # whichever is smaller) would.
    half = (width // 2) * (height // 2)
    wanted = half if work_pixels is None else min(half, work_pixels)
    preview, preview_exif = _preview(raw, sizes.flip, wanted, work_pixels, max_decode_pixels)
    if _MAKE not in exif:
        exif = preview_exif
    if preview is not None:
        image = preview
    else:
        if max_decode_pixels is not None and half > max_decode_pixels:
            raise PayloadTooLarge(
                f"the image has {width}x{height} = {width * height} pixels; a {kind} is "
                f"decoded at half size and the limit for that is {max_decode_pixels}",
                code="too_many_pixels",
            )
        # 8-bit, half size: a quarter of the photosites, demosaiced by binning, the
        # camera's white balance; the flip is applied by LibRaw.
        array = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        image = Image.fromarray(array, "RGB")
    if work_pixels is not None:
        image = fit_pixels(image, work_pixels)
    return image, exif


def _preview(
    raw: rawpy.RawPy, flip: int, wanted: int, work_pixels: int | None, max_decode_pixels: int | None
) -> tuple[Image.Image | None, Image.Exif]:
    """The embedded JPEG preview, upright, if it has at least `wanted` pixels and decodes
    within `max_decode_pixels` (after a draft to `work_pixels`); and its EXIF either way."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None, Image.Exif()
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None, Image.Exif()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(thumb.data), formats=("JPEG",))
        except (Image.DecompressionBombError, UnidentifiedImageError):
            return None, Image.Exif()  # the mosaic is still there, and bounded
    exif = img.getexif()
    if img.width * img.height < wanted:
        return None, exif
    if work_pixels is not None:
        img.draft("RGB", _scaled(img.width, img.height, work_pixels))
    if max_decode_pixels is not None and img.width * img.height > max_decode_pixels:
        return None, exif
    img.load()
    if exif.get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    elif flip in _FLIPS:
        img = img.transpose(_FLIPS[flip])
    return img.convert("RGB"), exif
