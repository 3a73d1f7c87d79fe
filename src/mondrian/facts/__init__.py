"""Measured photo facts: exposure, sharpness, geometry, colour and EXIF, from the pixels
with no model weights (docs/facts.md). OpenCV is imported inside the functions that use it,
so importing this package stays light."""

from mondrian.facts.measure import FACTS_VERSION, measure
from mondrian.facts.spec import FACTS, FactSpec

__all__ = ["FACTS", "FACTS_VERSION", "FactSpec", "measure"]
