"""What a strategy is, and what it needs to run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mondrian.advisors import Advisor
from mondrian.backends.protocol import Generation, TokenCallback
from mondrian.context import Context
from mondrian.errors import MondrianError
from mondrian.images import Photo
from mondrian.modes import Mode
from mondrian.schema import Critique, Fact, Reference


class ModelOutputError(MondrianError):
    """The model's answer was not a valid critique (only possible without the grammar)."""

    code = "invalid_model_output"
    http_status = 502


@dataclass
class Outcome:
    critique: Critique
    generation: Generation
    references: list[Reference] = field(default_factory=list)
    adapter: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Strategy(Protocol):
    name: Mode

    def unavailable(self, ctx: Context, advisor: Advisor) -> str | None:
        """Why this strategy cannot serve `advisor` now, or None when it can."""
        ...

    def run(
        self,
        ctx: Context,
        advisor: Advisor,
        photo: Photo,
        on_token: TokenCallback | None = None,
        *,
        facts: Sequence[Fact] = (),
    ) -> Outcome:
        """Critique `photo` as `advisor`; `facts` (measured once per photo by the caller,
        analysis.py) go into the critique prompt's "Measured:" block."""
        ...


def require_critique(generation: Generation) -> Critique:
    if generation.critique is None:
        raise ModelOutputError(f"the model's answer is not a valid critique: {generation.error}")
    return generation.critique
