"""Exposure: luma percentiles, clipping, and Ansel Adams' zones (docs/facts.md)."""

from __future__ import annotations

import numpy as np

ZONES = 11  # zones 0 to X
_BINS = 4096

# Rec. 709 luma weights on the gamma-encoded channels, what a histogram in an editor shows.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Luma of an (h, w, 3) uint8 array, 0-1 of full scale, flattened."""
    r, g, b = (rgb[..., i].reshape(-1).astype(np.float32) for i in range(3))
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b) / 255.0


def _percentiles(y: np.ndarray, shares: tuple[float, ...]) -> list[float]:
    """Percentiles read off a 4096-bin histogram: as exact as the values' 8-bit steps
    allow, without sorting the sample."""
    top = _BINS - 1
    counts = np.bincount(np.clip(np.rint(y * top), 0, top).astype(np.int64), minlength=_BINS)
    cumulative = np.cumsum(counts) / y.size
    return [float(np.searchsorted(cumulative, share)) / top for share in shares]


def exposure_facts(rgb: np.ndarray) -> dict[str, float | list[float]]:
    y = luma(rgb)
    p05, p50, p95 = _percentiles(y, (0.05, 0.5, 0.95))
    low = np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    high = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    zone = np.rint(y * (ZONES - 1)).astype(np.int64)
    zones = np.bincount(np.clip(zone, 0, ZONES - 1), minlength=ZONES) / y.size
    return {
        "luminance_p05": round(p05, 4),
        "luminance_p50": round(p50, 4),
        "luminance_p95": round(p95, 4),
        "shadows_clipped": round(float((low == 0).mean()), 4),
        "highlights_clipped": round(float((high == 255).mean()), 4),
        "zones": [round(float(z), 4) for z in zones],
        "median_zone": round(p50 * (ZONES - 1), 1),
    }
