"""Sharpness: Laplacian variance (whole frame and salient region), blur effect, noise."""

from __future__ import annotations

import math

import numpy as np

from mondrian.facts.saliency import Salient

# Below this many pixels a region's Laplacian variance is mostly border: use the frame.
_MIN_REGION = 16 * 16
_BLUR_H = 11  # skimage.measure.blur_effect's default h_size


def laplacian_variance(grey: np.ndarray) -> float:
    import cv2

    if min(grey.shape) < 3:
        return 0.0
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=1).var())


def region(grey: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The pixels of `grey` inside `box` (shares), or all of them when the box is tiny."""
    h, w = grey.shape
    left, top = math.floor(box[0] * w), math.floor(box[1] * h)
    right, bottom = math.ceil(box[2] * w), math.ceil(box[3] * h)
    part = grey[top:bottom, left:right]
    return part if part.size >= _MIN_REGION else grey


def blur_effect(grey: np.ndarray) -> float:
    """Crete-Roffet et al. (2007), as scikit-image's `blur_effect`: blur the image again
    along each axis and see how much of its neighbour differences survive. A sharp image
    loses many (near 0), a blurred one few (near 1); the larger axis value is kept."""
    import cv2

    scores = []
    for axis in (0, 1):
        if grey.shape[axis] < _BLUR_H + 2:
            continue
        kernel = (1, _BLUR_H) if axis == 1 else (_BLUR_H, 1)
        blurred = cv2.blur(grey, kernel, borderType=cv2.BORDER_REFLECT)
        d_f = np.abs(np.diff(grey, axis=axis))
        d_b = np.abs(np.diff(blurred, axis=axis))
        v = np.maximum(d_f - d_b, 0)
        s_f = float(d_f.sum())
        scores.append(1.0 if s_f <= 0 else 1.0 - float(v.sum()) / s_f)
    # No detail at all (a constant image, a sliver too thin for the filter) reads as
    # fully blurred: there is nothing sharp in it.
    return max(scores) if scores else 1.0


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer (1996): the mask's response to a smooth image is near 0, so its mean
    absolute value measures the noise's sigma. 0-1 of full scale."""
    import cv2

    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = cv2.filter2D(grey, cv2.CV_32F, mask)[1:-1, 1:-1]
    sigma = math.sqrt(math.pi / 2) * float(np.abs(response).sum()) / (6 * (w - 2) * (h - 2))
    return sigma / 255.0


def sharpness_facts(work: np.ndarray, crop: np.ndarray, subject: Salient) -> dict[str, float]:
    return {
        "sharpness": round(laplacian_variance(work), 1),
        "subject_sharpness": round(laplacian_variance(region(work, subject.box)), 1),
        "blur": round(blur_effect(work), 4),
        "noise": round(noise_sigma(crop), 4),
    }
