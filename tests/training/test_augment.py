"""Augmentation: within the seeds' ranges, deterministic, no flip where it is not allowed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mondrian.training import augment

HASH = "ab" * 32


def _photo(width: int = 120, height: int = 80) -> Image.Image:
    # Left half dark, right half light: a flip is visible.
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = 40
    pixels[:, width // 2 :] = 200
    return Image.fromarray(pixels)


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, aug_a = augment.augment(_photo(), 7, HASH, 1, True)
    b, aug_b = augment.augment(_photo(), 7, HASH, 1, True)
    c, _ = augment.augment(_photo(), 8, HASH, 1, True)
    assert aug_a == aug_b and a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_draws_stay_in_the_seed_ranges():
    draws = [augment.draw(s, HASH, k, True) for s in range(50) for k in range(1, 4)]
    assert all(0.9 <= d.crop <= 1.0 for d in draws)
    assert all(abs(d.exposure) <= 0.2 for d in draws)
    assert all(abs(d.rotation) <= 5.0 for d in draws)
    assert any(d.flip for d in draws) and not all(d.flip for d in draws)


def test_no_flip_when_the_advisor_forbids_it_and_other_draws_unchanged():
    for seed in range(40):
        free = augment.draw(seed, HASH, 1, True)
        strict = augment.draw(seed, HASH, 1, False)
        assert not strict.flip
        assert (free.crop, free.exposure, free.rotation) == (
            strict.crop,
            strict.exposure,
            strict.rotation,
        )


def test_flip_mirrors_the_photo():
    aug = augment.Augmentation(crop=1.0, crop_x=0, crop_y=0, flip=True, exposure=0, rotation=0)
    out = np.asarray(augment.apply(_photo(), aug))
    assert out[:, 0].mean() > 150 and out[:, -1].mean() < 60


@pytest.mark.parametrize("stops", [0.2, -0.2])
def test_exposure_moves_brightness_the_right_way(stops):
    aug = augment.Augmentation(crop=1.0, crop_x=0, crop_y=0, flip=False, exposure=stops, rotation=0)
    before = np.asarray(_photo(), dtype=float).mean()
    after = np.asarray(augment.apply(_photo(), aug), dtype=float).mean()
    assert (after > before) == (stops > 0)
    assert abs(after - before) < 0.2 * before  # a fifth of a stop, not a new photo


def test_crop_keeps_ninety_to_hundred_percent_of_each_side():
    for seed in range(20):
        img, aug = augment.augment(_photo(), seed, HASH, 1, True)
        k = augment.inscribed_scale(120, 80, aug.rotation) * aug.crop
        assert img.width == pytest.approx(120 * k, abs=2)
        assert img.height == pytest.approx(80 * k, abs=2)
        assert img.width >= 0.8 * 120 and img.height >= 0.8 * 80


def test_rotation_leaves_no_black_corners():
    bright = Image.new("RGB", (200, 120), (230, 230, 230))
    aug = augment.Augmentation(crop=1.0, crop_x=0, crop_y=0, flip=False, exposure=0, rotation=5)
    out = np.asarray(augment.apply(bright, aug))
    assert out.min() > 200


def test_inscribed_scale():
    assert augment.inscribed_scale(100, 100, 0) == 1.0
    # A square rotated 45 degrees holds a square of half the area.
    assert augment.inscribed_scale(100, 100, 45) == pytest.approx(1 / math.sqrt(2))
    assert augment.inscribed_scale(300, 100, 5) == augment.inscribed_scale(300, 100, -5)
