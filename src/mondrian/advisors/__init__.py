"""Advisors are data: the model, the file loader and the advisors shipped in `data/`."""

from mondrian.advisors.loader import get_shipped, load_advisor_file, shipped_advisors
from mondrian.advisors.model import Advisor

__all__ = ["Advisor", "get_shipped", "load_advisor_file", "shipped_advisors"]
