"""A saliency map by the spectral residual (Hou & Zhang, CVPR 2007), home-made with numpy's
FFT: OpenCV's own implementation is only in opencv-contrib, and the method is a dozen lines.

The log amplitude spectrum of natural images is close to its local average; what stands out
from it (the residual), kept with the original phase and transformed back, marks the
regions that differ from their surroundings. Run at SALIENCY_SIDE px on the long side,
the scale the paper uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mondrian.facts.spec import SALIENCY_SIDE


@dataclass(frozen=True)
class Salient:
    point: tuple[float, float]  # [x, y] as shares of width and height
    box: tuple[float, float, float, float]  # left, top, right, bottom, shares


_CENTRE = Salient(point=(0.5, 0.5), box=(0.0, 0.0, 1.0, 1.0))


def saliency_map(grey: np.ndarray) -> np.ndarray:
    """The map (values >= 0) of a grey image, at SALIENCY_SIDE on its long side."""
    import cv2

    h, w = grey.shape
    scale = SALIENCY_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(grey.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    # Mirrored margins make the FFT's periodic extension seamless: without them the jump
    # from one edge to the opposite one is itself "salient" and pulls points to the border.
    pad_y, pad_x = small.shape[0] // 4, small.shape[1] // 4
    small = cv2.copyMakeBorder(small, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REFLECT)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3), borderType=cv2.BORDER_REPLICATE)
    back = np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))
    sal = cv2.GaussianBlur((np.abs(back) ** 2).astype(np.float32), (0, 0), 2.5)
    return sal[pad_y : sal.shape[0] - pad_y, pad_x : sal.shape[1] - pad_x]


def salient(grey: np.ndarray) -> Salient:
    """The salient region: map values over 3 x the mean (the paper's object threshold); its
    weighted centroid is the salient point. A flat map (a constant photo) gives the centre."""
    if grey.size == 0 or float(grey.max() - grey.min()) < 1.0:
        return _CENTRE  # nothing stands out of a flat photo
    sal = saliency_map(grey)
    h, w = sal.shape
    mean = float(sal.mean())
    if not np.isfinite(mean) or mean <= 0:
        return _CENTRE
    mask = sal > 3 * mean
    if not mask.any():
        mask = sal >= np.percentile(sal, 95)
    weights = np.where(mask, sal, 0.0)
    ys, xs = np.nonzero(mask)
    total = float(weights.sum())
    cx = float((weights.sum(axis=0) * (np.arange(w) + 0.5)).sum() / total) / w
    cy = float((weights.sum(axis=1) * (np.arange(h) + 0.5)).sum() / total) / h
    box = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
    return Salient(point=(cx, cy), box=tuple(float(v) for v in box))  # type: ignore[arg-type]
