"""Colour: colourfulness (Hasler & Suesstrunk 2003), monochrome, dominant hues, and the
hue-harmony template that fits best (Cohen-Or et al., "Color Harmonization", 2006)."""

from __future__ import annotations

from functools import cache

import numpy as np

# Cohen-Or et al.'s templates: sectors as (centre offset, width) in degrees.
TEMPLATES: dict[str, tuple[tuple[float, float], ...]] = {
    "i": ((0, 18),),
    "V": ((0, 93.6),),
    "L": ((0, 18), (90, 79.2)),
    "I": ((0, 18), (180, 18)),
    "T": ((0, 180),),
    "Y": ((0, 93.6), (180, 18)),
    "X": ((0, 93.6), (180, 93.6)),
}
_MONO_COLOURFULNESS = 3.0
_MONO_SATURATED_SHARE = 0.02
_SATURATED = 0.15  # HSV saturation a pixel needs for its hue to count
_BINS = 360
_FIT_SLACK = 0.05  # a narrower template within this of the best fit is preferred


def colourfulness(rgb: np.ndarray) -> float:
    flat = rgb.reshape(-1, 3).astype(np.float32)
    rg = flat[:, 0] - flat[:, 1]
    yb = 0.5 * (flat[:, 0] + flat[:, 1]) - flat[:, 2]
    sigma = np.hypot(rg.std(), yb.std())
    mu = np.hypot(rg.mean(), yb.mean())
    return float(sigma + 0.3 * mu)


def hue_histogram(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The chroma-weighted histogram of hues (1-degree bins) and the share of pixels
    saturated enough to have a hue. Channel by channel: numpy's reductions across a short
    last axis are several times slower than elementwise maxima."""
    r, g, b = (rgb[..., i].reshape(-1).astype(np.float32) / 255.0 for i in range(3))
    top = np.maximum(np.maximum(r, g), b)
    chroma = top - np.minimum(np.minimum(r, g), b)
    keep = (chroma > _SATURATED * top) & (top > 0.1)  # HSV saturation = chroma / value
    if not keep.any():
        return np.zeros(_BINS), 0.0
    r, g, b, c = r[keep], g[keep], b[keep], chroma[keep]
    hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    hist = np.bincount(hue.astype(np.int64) % _BINS, weights=c, minlength=_BINS)
    return hist, float(keep.mean())


def _smooth(hist: np.ndarray, width: int = 7) -> np.ndarray:
    kernel = np.ones(width) / width
    padded = np.concatenate([hist[-width:], hist, hist[:width]])
    return np.convolve(padded, kernel, mode="same")[width:-width]


def dominant_hues(hist: np.ndarray, limit: int = 3) -> list[float]:
    """Circular local maxima of the smoothed histogram, each peak's +-30 degree lobe
    holding at least 10% of the hue weight, strongest first."""
    total = float(hist.sum())
    if total <= 0:
        return []
    smooth = _smooth(hist)
    peaks = [
        i for i in range(_BINS)
        if smooth[i] > 0 and smooth[i] >= smooth[i - 1] and smooth[i] > smooth[(i + 1) % _BINS]
    ]  # fmt: skip
    lobe = np.array([hist[np.arange(i - 30, i + 31) % _BINS].sum() for i in peaks]) / total
    chosen: list[int] = []
    for i in sorted(peaks, key=lambda p: -smooth[p]):
        near = any(min(abs(i - j), _BINS - abs(i - j)) < 30 for j in chosen)
        if lobe[peaks.index(i)] >= 0.10 and not near:
            chosen.append(i)
    return [float(i) for i in chosen[:limit]]


def _inside(template: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(rotation, bin) -> 1 where the bin's hue lies in a sector at that rotation."""
    hues = np.arange(_BINS) + 0.5
    rotations = np.arange(_BINS)[:, None]
    mask = np.zeros((_BINS, _BINS))
    for offset, width in template:
        distance = np.abs((hues[None, :] - rotations - offset + 180) % 360 - 180)
        mask = np.maximum(mask, distance <= width / 2)
    return mask


@cache
def _masks() -> dict[str, np.ndarray]:
    return {name: _inside(t).astype(np.float32) for name, t in TEMPLATES.items()}


_ARC = {name: sum(w for _, w in t) for name, t in TEMPLATES.items()}


def harmony(hist: np.ndarray) -> tuple[str, float]:
    """The narrowest template whose best rotation holds within _FIT_SLACK of the best
    template's share of the hue weight (T, half the wheel, would otherwise always win)."""
    total = float(hist.sum())
    if total <= 0:
        return "none", 0.0
    fits = {name: float((mask @ hist).max()) / total for name, mask in _masks().items()}
    best = max(fits.values())
    name = min((n for n in fits if fits[n] >= best - _FIT_SLACK), key=lambda n: _ARC[n])
    return name, fits[name]


def colour_facts(rgb: np.ndarray) -> dict[str, float | str | list[float]]:
    m = colourfulness(rgb)
    hist, saturated = hue_histogram(rgb)
    mono = m < _MONO_COLOURFULNESS and saturated < _MONO_SATURATED_SHARE
    template, fit = ("none", 0.0) if mono else harmony(hist)
    return {
        "colourfulness": round(m, 2),
        "monochrome": "yes" if mono else "no",
        "dominant_hues": [] if mono else dominant_hues(hist),
        "harmony_template": template,
        "harmony_fit": round(fit, 4),
    }
