"""Where a photo clips: a small PNG of the photo with its clipped pixels marked.

The facts give the shares (facts/exposure.py: `highlights_clipped`, a pixel with some
channel at 255; `shadows_clipped`, some channel at 0); this shows where they are. The photo
is shrunk to MASK_SIDE on its long side by nearest-neighbour sampling, as the facts' own
`sample` copy is (facts/views.py): values stay exact, where an average would turn a blown
255 into 250 and hide it. It is drawn in dimmed grey so that the marks stand out:
highlights clipped in red, shadows clipped in blue. A report shows it only when a share
reaches MASK_SHOWN_SHARE (facts_view.py), since a mask of a few specks says nothing.

The PNG is a `data:` URI like the report's JPEG thumbnails (reports/thumbnails.py), which
the pages' Content-Security-Policy (`img-src data:`) allows; nothing is loaded.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageOps

MASK_SIDE = 320
# 1% of the frame: above it a clipped area is a visible region in a 320-pixel mask (about
# a thousand marked pixels), below it the marks are scattered specks.
MASK_SHOWN_SHARE = 0.01
HIGHLIGHT_RGB = (230, 30, 60)
SHADOW_RGB = (30, 110, 255)
_DIM = 0.55  # the grey photo under the marks, at 55% of its luma


def clipping_mask_uri(data: bytes, side: int = MASK_SIDE) -> str:
    """A PNG data URI: the photo in `data` at most `side` pixels on its long side, grey,
    with every pixel that has a channel at 255 red and every one with a channel at 0 blue
    (highlights win where both hold)."""
    rgb = _sampled(data, side)
    high = rgb.max(axis=2) == 255
    low = rgb.min(axis=2) == 0
    grey = rgb.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    dimmed = (_DIM * grey).astype(np.uint8)
    out = np.repeat(dimmed[..., None], 3, axis=2)
    out[low] = SHADOW_RGB
    out[high] = HIGHLIGHT_RGB
    buffer = io.BytesIO()
    Image.fromarray(out, "RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _sampled(data: bytes, side: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        # A JPEG decodes at 1/2 to 1/8 of its size first (`draft`, DCT scaling) but never
        # below twice the mask's side, so the nearest-neighbour pick below still reads
        # pixels close to the original's values.
        image.draft("RGB", (2 * side, 2 * side))
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = side / max(image.width, image.height)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.NEAREST)
        return np.asarray(image)
