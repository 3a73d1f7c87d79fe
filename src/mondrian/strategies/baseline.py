"""`baseline`: one pass, system prompt and the advisor's voice, nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from mondrian.advisors import Advisor
from mondrian.backends.protocol import GenerationRequest, TokenCallback
from mondrian.context import Context
from mondrian.images import Photo
from mondrian.modes import Mode
from mondrian.prompts import critique_prompt
from mondrian.schema import Fact
from mondrian.strategies.base import Outcome, require_critique


class Baseline:
    name = Mode.BASELINE

    def unavailable(self, ctx: Context, advisor: Advisor) -> str | None:
        return None

    def run(
        self,
        ctx: Context,
        advisor: Advisor,
        photo: Photo,
        on_token: TokenCallback | None = None,
        *,
        facts: Sequence[Fact] = (),
    ) -> Outcome:
        request = GenerationRequest(prompt=critique_prompt(advisor, photo.image, facts=facts))
        (generation,) = ctx.backend.generate([request], on_token=on_token)
        return Outcome(
            critique=require_critique(generation),
            generation=generation,
            timings=dict(generation.timings),
        )
