"""Exposure: luma percentiles, clipping, and Ansel Adams' zones (docs/facts.md)."""

from __future__ import annotations

import numpy as np

ZONES = 11  # zones 0 to X

# Rec. 709 luma weights on the gamma-encoded channels, what a histogram in an editor shows.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Luma of an (h, w, 3) uint8 array, 0-1 of full scale, flattened."""
    return (rgb.reshape(-1, 3).astype(np.float32) @ _LUMA) / 255.0


def exposure_facts(rgb: np.ndarray) -> dict[str, float | list[float]]:
    y = luma(rgb)
    p05, p50, p95 = (float(v) for v in np.percentile(y, (5, 50, 95)))
    flat = rgb.reshape(-1, 3)
    zone = np.clip(np.rint(y * (ZONES - 1)), 0, ZONES - 1).astype(np.int64)
    zones = np.bincount(zone, minlength=ZONES) / y.size
    return {
        "luminance_p05": round(p05, 4),
        "luminance_p50": round(p50, 4),
        "luminance_p95": round(p95, 4),
        "shadows_clipped": round(float((flat == 0).any(axis=1).mean()), 4),
        "highlights_clipped": round(float((flat == 255).any(axis=1).mean()), 4),
        "zones": [round(float(z), 4) for z in zones],
        "median_zone": round(p50 * (ZONES - 1), 1),
    }
