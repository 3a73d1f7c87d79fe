"""Strategies by name, and the fallback that walks lora -> rag -> baseline."""

from __future__ import annotations

from dataclasses import dataclass

from mondrian.advisors import Advisor
from mondrian.context import Context
from mondrian.errors import InvalidInput, parse_choice
from mondrian.modes import FALLBACK_ORDER, Mode
from mondrian.strategies.base import Strategy
from mondrian.strategies.baseline import Baseline
from mondrian.strategies.lora import Lora
from mondrian.strategies.rag import Rag

STRATEGIES: dict[Mode, Strategy] = {Mode.BASELINE: Baseline(), Mode.RAG: Rag(), Mode.LORA: Lora()}


def get_strategy(name: str) -> Strategy:
    return STRATEGIES[parse_choice(Mode, name, "mode", code="bad_mode")]


@dataclass
class Fallback:
    """Tries the requested mode, then each later one in FALLBACK_ORDER that can serve."""

    strategies: dict[str, Strategy]

    def choose(self, ctx: Context, advisor: Advisor, requested: str) -> tuple[Strategy, list[str]]:
        mode = get_strategy(requested).name  # validates the name
        reasons = []
        for name in FALLBACK_ORDER[FALLBACK_ORDER.index(mode) :]:
            strategy = self.strategies.get(name)
            why = "not installed" if strategy is None else strategy.unavailable(ctx, advisor)
            if why is None:
                return strategy, reasons
            reasons.append(f"{name}: {why}")
        raise InvalidInput(f"no mode can serve advisor {advisor.id}: {'; '.join(reasons)}")
