"""Deterministic photo augmentation for training data.

The seeds' recipe: a random crop keeping 90-100% of each side, a horizontal flip where the
advisor allows it (a mirrored Cartier-Bresson is not the same picture), exposure within
±0.2 stop, rotation within ±5°. Each augmentation is drawn from `(seed, image hash,
index)` alone, so a dataset rebuilt with the same seed has the same pixels whatever order
the images come in. Rotation crops to the largest upright rectangle of the same aspect
inside the rotated frame: no black corners for the model to learn.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

CROP_RANGE = (0.90, 1.00)  # fraction of each side kept
EXPOSURE_STOPS = 0.2
ROTATION_DEGREES = 5.0


@dataclass(frozen=True)
class Augmentation:
    """One drawn augmentation; the record is kept in the dataset for reproducibility."""

    crop: float  # fraction of each side kept
    crop_x: float  # where the crop sits, 0 (left) .. 1 (right) of the slack
    crop_y: float
    flip: bool
    exposure: float  # stops
    rotation: float  # degrees, counter-clockwise

    def as_dict(self) -> dict[str, float | bool]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def draw(seed: int, image_hash: str, index: int, allow_flip: bool) -> Augmentation:
    """The `index`-th augmentation of an image, a pure function of its arguments."""
    rng = random.Random(f"mondrian-augment:{seed}:{image_hash}:{index}")
    return Augmentation(
        crop=rng.uniform(*CROP_RANGE),
        crop_x=rng.random(),
        crop_y=rng.random(),
        # Drawn whether or not it is used, so allow_flip does not shift the other draws.
        flip=(rng.random() < 0.5) and allow_flip,
        exposure=rng.uniform(-EXPOSURE_STOPS, EXPOSURE_STOPS),
        rotation=rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES),
    )


def apply(image: Image.Image, aug: Augmentation) -> Image.Image:
    """The augmented RGB image."""
    img = image.convert("RGB")
    if aug.rotation:
        img = _rotate_inscribed(img, aug.rotation)
    img = _crop(img, aug.crop, aug.crop_x, aug.crop_y)
    if aug.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.exposure:
        img = _exposure(img, aug.exposure)
    return img


def augment(
    image: Image.Image, seed: int, image_hash: str, index: int, allow_flip: bool
) -> tuple[Image.Image, Augmentation]:
    aug = draw(seed, image_hash, index, allow_flip)
    return apply(image, aug), aug


def _crop(img: Image.Image, keep: float, fx: float, fy: float) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left = round((w - cw) * fx)
    top = round((h - ch) * fy)
    return img.crop((left, top, left + cw, top + ch))


def inscribed_scale(width: int, height: int, degrees: float) -> float:
    """Largest k such that a centred (k*w) x (k*h) rectangle fits in the w x h frame
    rotated by `degrees`."""
    theta = math.radians(abs(degrees))
    c, s = math.cos(theta), math.sin(theta)
    half_w, half_h = width / 2, height / 2
    return min(half_w / (half_w * c + half_h * s), half_h / (half_w * s + half_h * c))


def _rotate_inscribed(img: Image.Image, degrees: float) -> Image.Image:
    w, h = img.size
    rotated = img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    k = inscribed_scale(w, h, degrees)
    cw, ch = max(1, math.floor(w * k)), max(1, math.floor(h * k))
    left, top = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((left, top, left + cw, top + ch))


def _exposure(img: Image.Image, stops: float) -> Image.Image:
    # A stop doubles the light: scale in linear light, not in gamma-encoded sRGB values.
    srgb = np.asarray(img, dtype=np.float32) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(linear * (2.0**stops), 0.0, 1.0)
    encoded = np.where(
        linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055
    )
    return Image.fromarray(np.round(encoded * 255.0).astype(np.uint8))
