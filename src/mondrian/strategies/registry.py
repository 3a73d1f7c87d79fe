"""Strategies by name, and the fallback that walks lora -> rag -> baseline."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from mondrian.advisors import Advisor
from mondrian.backends.protocol import TokenCallback
from mondrian.context import Context
from mondrian.errors import InvalidInput, parse_choice
from mondrian.images import Photo
from mondrian.modes import Mode, Variant
from mondrian.schema import AnalysisResult, ModelInfo
from mondrian.strategies.base import Strategy
from mondrian.strategies.baseline import Baseline
from mondrian.strategies.lora import Lora
from mondrian.strategies.rag import Rag

log = logging.getLogger(__name__)

STRATEGIES: dict[Mode, Strategy] = {Mode.BASELINE: Baseline(), Mode.RAG: Rag(), Mode.LORA: Lora()}
FALLBACK_ORDER: tuple[Mode, ...] = (Mode.LORA, Mode.RAG, Mode.BASELINE)


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


def analyze(
    ctx: Context,
    advisor: Advisor,
    photo: Photo,
    mode: str,
    *,
    variant: str | None = None,
    on_token: TokenCallback | None = None,
) -> AnalysisResult:
    """Critique `photo` as `advisor` in `mode`, falling back when the mode cannot serve.

    `variant` is the arm a model policy assigned ('base' rules adapters out); None where
    no policy applies. The result's `model.variant` says what actually served: 'fine_tuned'
    when an adapter did, else 'base'.
    """
    started = time.perf_counter()
    if variant is not None:
        ctx = dataclasses.replace(ctx, variant=variant)
    strategy, reasons = Fallback(STRATEGIES).choose(ctx, advisor, mode)
    if reasons:
        log.info("advisor %s: %s used instead (%s)", advisor.id, strategy.name, "; ".join(reasons))
    outcome = strategy.run(ctx, advisor, photo, on_token)
    timings = {**outcome.timings, "total_s": round(time.perf_counter() - started, 4)}
    return AnalysisResult(
        advisor_id=advisor.id,
        mode_requested=mode,
        mode_used=strategy.name,
        model=ModelInfo(
            base=ctx.backend.model_id,
            adapter=outcome.adapter,
            variant=Variant.FINE_TUNED if outcome.adapter else Variant.BASE,
            backend=ctx.backend.name,
        ),
        critique=outcome.critique.scored(advisor.weights),
        references=outcome.references,
        timings=timings,
    )
