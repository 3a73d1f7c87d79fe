"""Photos for the facts' tests: the shipped ones as `Photo`s, manipulated copies, and two
synthetic scenes where a real photo cannot pin the answer (a horizon at a known angle, one
bright subject at a known place)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from mondrian.facts import measure
from mondrian.images import Photo, read_image, read_image_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "src" / "mondrian" / "data" / "sample_portfolio"
ASSETS = ROOT / "tests" / "assets" / "photos"


def shipped(name: str) -> Image.Image:
    folder = ASSETS if (ASSETS / name).exists() else SAMPLES
    return read_image_file(folder / name).image


def photo(image: Image.Image) -> Photo:
    """`image` as the service would read it (PNG: no compression changes the pixels)."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return read_image(buf.getvalue())


def facts(image: Image.Image) -> dict[str, object]:
    return {fact.name: fact.value for fact in measure(photo(image))}


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated counter-clockwise, cropped to the centred rectangle of the same shape that
    holds no corner of the rotation's empty background (its edges would be lines too)."""
    turned = image.rotate(degrees, resample=Image.Resampling.BICUBIC)
    a = math.radians(abs(degrees))
    w, h = image.size
    k = 1 / (math.cos(a) + max(w / h, h / w) * math.sin(a))
    left, top = (w - w * k) / 2, (h - h * k) / 2
    return turned.crop((round(left), round(top), round(left + w * k), round(top + h * k)))


def horizon(degrees: float = 0.0, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A sky over a sea, the horizon through the centre leaning `degrees` (CCW +), noise on
    both so nothing else is a clean edge."""
    w, h = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    line = h * 0.55 - (x - w / 2) * math.tan(math.radians(degrees))
    sky = np.stack([120 + 60 * y / h, 160 + 40 * y / h, 230 - 20 * y / h], -1)
    sea = np.stack([20 + 0 * y, 60 + 20 * y / h, 110 + 0 * y], -1)
    img = np.where((y < line)[..., None], sky, sea) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def bright_subject(centre: tuple[int, int], size: tuple[int, int] = (900, 600)) -> Image.Image:
    """One bright disc on a noisy, gently graded dark ground."""
    w, h = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ground = 70 + 20 * x / w + rng.normal(0, 8, (h, w))
    disc = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 < 40**2
    grey = np.clip(np.where(disc, 235, ground), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey, grey, (grey * 0.9).astype(np.uint8)], -1))
