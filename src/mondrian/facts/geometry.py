"""Geometry: the tilt of the horizon or dominant line, the salient subject against the
thirds and the centre, the frame's shape and resolution."""

from __future__ import annotations

import math

import numpy as np

from mondrian.facts.saliency import Salient

_LEVEL_WINDOW = 20.0  # degrees from level (or plumb) a segment may lean to count
# The segments of one orientation must add up to this share of the copy's long side.
_MIN_LENGTH = 0.5
_THIRDS = [(x, y) for x in (1 / 3, 2 / 3) for y in (1 / 3, 2 / 3)]


def _segments(grey: np.ndarray) -> np.ndarray:
    """Hough segments (x1, y1, x2, y2) of the Canny edges, thresholds from the median."""
    import cv2

    img = grey.astype(np.uint8)
    median = float(np.median(img))
    edges = cv2.Canny(img, max(10.0, 0.66 * median), max(30.0, 1.33 * median))
    long_side = max(grey.shape)
    lines = cv2.HoughLinesP(
        edges, 1, np.pi / 720, threshold=40,
        minLineLength=max(20, long_side // 12), maxLineGap=max(3, long_side // 200),
    )  # fmt: skip
    return np.zeros((0, 4)) if lines is None else lines.reshape(-1, 4).astype(np.float64)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def tilt_degrees(grey: np.ndarray) -> float:
    """Signed lean of the dominant near-level or near-plumb line set, + counter-clockwise."""
    if min(grey.shape) < 8:
        return 0.0
    seg = _segments(grey)
    if len(seg) == 0:
        return 0.0
    dx, dy = seg[:, 2] - seg[:, 0], -(seg[:, 3] - seg[:, 1])  # y up
    length = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(dy, dx))  # -180..180, direction-free below
    level = (angle + 90) % 180 - 90  # -90..90, 0 = level
    plumb = angle % 180 - 90  # -90..90, 0 = plumb (a CCW lean is +)
    best, best_length = 0.0, _MIN_LENGTH * max(grey.shape)
    for lean in (level, plumb):
        near = np.abs(lean) <= _LEVEL_WINDOW
        total = float(length[near].sum())
        if total >= best_length:
            best, best_length = _weighted_median(lean[near], length[near]), total
    return best


def geometry_facts(grey: np.ndarray, subject: Salient, width: int, height: int) -> dict:
    x, y = subject.point
    diagonal = math.hypot(1.0, 1.0)  # shares of width and height: the unit square's
    thirds = min(math.hypot(x - tx, y - ty) for tx, ty in _THIRDS) / diagonal
    return {
        "tilt": round(tilt_degrees(grey), 2),
        "subject_position": [round(x, 4), round(y, 4)],
        "subject_thirds_distance": round(thirds, 4),
        "subject_centre_distance": round(math.hypot(x - 0.5, y - 0.5) / diagonal, 4),
        "aspect_ratio": round(width / height, 3),
        "megapixels": round(width * height / 1e6, 2),
    }
