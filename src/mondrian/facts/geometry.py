"""Geometry: the tilt of the horizon or dominant line, the salient subject against the
thirds and the centre, the frame's shape and resolution."""

from __future__ import annotations

import math

import numpy as np

from mondrian.facts.saliency import Salient

_LEVEL_WINDOW = 20.0  # degrees from level (or plumb) a segment may lean to count
# A line needs edge pixels along this share of the copy's short side to count: at 0.4
# textures (grass, gravel, the Hubble field) and a cat's fur read as leaning lines.
_MIN_VOTES = 0.6
_THIRDS = [(x, y) for x in (1 / 3, 2 / 3) for y in (1 / 3, 2 / 3)]


def _lines(grey: np.ndarray) -> np.ndarray:
    """Hough lines of the Canny edges as rows (theta in degrees, votes), 0.1-degree steps,
    edge thresholds from the median grey. Only the angles within _LEVEL_WINDOW of level or
    plumb are voted on: a third of the work of the whole half-turn."""
    import cv2

    img = np.clip(grey, 0, 255).astype(np.uint8)
    median = float(np.median(img))
    edges = cv2.Canny(img, max(10.0, 0.66 * median), max(30.0, 1.33 * median))
    threshold = max(10, round(_MIN_VOTES * min(grey.shape)))
    w = _LEVEL_WINDOW
    found = [
        cv2.HoughLinesWithAccumulator(
            edges, 1, np.pi / 1800, threshold, min_theta=np.radians(lo), max_theta=np.radians(hi)
        )
        for lo, hi in ((90 - w, 90 + w), (0, w), (180 - w, 180))
    ]
    rows = [f.reshape(-1, 3) for f in found if f is not None]
    if not rows:
        return np.zeros((0, 2))
    lines = np.concatenate(rows)
    # theta is the angle of the line's normal from the x axis (y down): a level line has
    # theta 90, and leaning counter-clockwise by t, 90 - t; a plumb one 0 (or 180), and -t.
    return np.stack([np.degrees(lines[:, 1]), lines[:, 2]], axis=1)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def tilt_degrees(grey: np.ndarray) -> float:
    """Signed lean of the dominant near-level or near-plumb lines, + counter-clockwise:
    the vote-weighted median of the strongest lines of whichever set has more votes."""
    if min(grey.shape) < 8:
        return 0.0
    lines = _lines(grey)
    if len(lines) == 0:
        return 0.0
    theta, votes = lines[:, 0], lines[:, 1]
    level = 90.0 - theta  # a level line's normal points down: theta 90
    plumb = (180.0 - theta + 90) % 180 - 90  # theta near 0 or 180
    best, best_votes = 0.0, 0.0
    for lean in (level, plumb):
        near = np.abs(lean) <= _LEVEL_WINDOW
        if not near.any():
            continue
        strong = near & (votes >= 0.5 * votes[near].max())
        total = float(votes[strong].sum())
        if total > best_votes:
            best, best_votes = _weighted_median(lean[strong], votes[strong]), total
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
