"""The measurement copies of one photo, made once and shared by every kind of fact.

A 24 MP photo is never measured whole (the budget is docs/facts.md's, bench/facts_bench.py
measures it): each fact reads the smallest copy that keeps what it measures.
- `sample`: every k-th pixel in each direction (nearest), at most SAMPLE_PIXELS. Pixel
  values stay exact, so shares of clipped pixels, percentiles and hue statistics are an
  unbiased sample of the whole photo's; an average would hide clipped specks.
- `work`: grey, long side WORK_SIDE, area-averaged. Laplacian variance, blur and Hough
  segments depend on scale, so one fixed size makes photos of any resolution comparable.
- `crop`: grey, a full-resolution centre square of at most CROP_SIDE: noise lives in single
  pixels and any downscale would average it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mondrian.facts.spec import CROP_SIDE, SAMPLE_PIXELS, WORK_SIDE


@dataclass(frozen=True)
class Views:
    sample: np.ndarray  # (h, w, 3) uint8 RGB
    work: np.ndarray  # (h, w) float32 grey, 0-255
    crop: np.ndarray  # (h, w) float32 grey, 0-255


def views_of(image: Image.Image) -> Views:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return Views(sample=_sample(rgb), work=_work(rgb), crop=_crop(rgb))


def _sample(rgb: Image.Image) -> np.ndarray:
    step = max(1, math.ceil(math.sqrt(rgb.width * rgb.height / SAMPLE_PIXELS)))
    if step == 1:
        return np.asarray(rgb)
    size = (max(1, rgb.width // step), max(1, rgb.height // step))
    return np.asarray(rgb.resize(size, Image.Resampling.NEAREST))


def _work(rgb: Image.Image) -> np.ndarray:
    scale = WORK_SIDE / max(rgb.width, rgb.height)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        # An integer box reduction first (`reduce`: a quarter of `resize`'s time on 24 MP,
        # measured by bench/facts_bench.py), then an exact box resample of the rest; grey
        # is converted last, on 1 MP rather than 24.
        factor = int(1 / scale)
        if factor >= 2:
            rgb = rgb.reduce(factor)
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb.convert("L"), dtype=np.float32)


def _crop(rgb: Image.Image) -> np.ndarray:
    w, h = min(rgb.width, CROP_SIDE), min(rgb.height, CROP_SIDE)
    left, top = (rgb.width - w) // 2, (rgb.height - h) // 2
    return np.asarray(rgb.crop((left, top, left + w, top + h)).convert("L"), dtype=np.float32)
