"""`lora`: one pass with the advisor's active adapter, loaded under its name `advisor@vN`.

The adapter is made resident on first use and stays resident (the backend keeps adapters
side by side), so later requests pay nothing. `unavailable` loads it too: an adapter the
backend refuses (trained on another base model, files missing, a backend without
adapter support) makes the mode unavailable, with the reason, and the fallback moves on
instead of the request failing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mondrian.adapter_format import note_facts_version
from mondrian.advisors import Advisor
from mondrian.backends.protocol import GenerationRequest, TokenCallback
from mondrian.context import Context
from mondrian.errors import MondrianError, Unavailable
from mondrian.facts import FACTS_VERSION
from mondrian.images import Photo
from mondrian.modes import Mode, Variant
from mondrian.prompts import critique_prompt
from mondrian.schema import Fact
from mondrian.storage import adapters as adapter_store
from mondrian.strategies.base import Outcome, require_critique

log = logging.getLogger(__name__)

BASE_POLICY_REASON = "the model policy serves the base model"


class Lora:
    name = Mode.LORA

    def unavailable(self, ctx: Context, advisor: Advisor) -> str | None:
        if ctx.variant == Variant.BASE:
            return BASE_POLICY_REASON
        active = _active(ctx, advisor.id)
        if active is None:
            return "no active adapter"
        try:
            ensure_loaded(ctx, active)
        except (MondrianError, NotImplementedError) as exc:
            message = exc.message if isinstance(exc, MondrianError) else str(exc)
            return f"adapter {active.ref} cannot be loaded: {message or type(exc).__name__}"
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
        # Read again: the active version may have changed since `unavailable` looked.
        active = _active(ctx, advisor.id)
        if active is None:
            raise Unavailable(f"advisor {advisor.id!r} has no active adapter", code="no_adapter")
        name = ensure_loaded(ctx, active)
        request = GenerationRequest(
            prompt=critique_prompt(advisor, photo.image, facts=facts), adapter=name
        )
        (generation,) = ctx.backend.generate([request], on_token=on_token)
        return Outcome(
            critique=require_critique(generation),
            generation=generation,
            adapter=name,
            timings=dict(generation.timings),
        )


def ensure_loaded(ctx: Context, adapter: adapter_store.Adapter) -> str:
    """Make `adapter` resident in the backend under its ref, once; returns the ref."""
    name = adapter.ref
    if name not in ctx.backend.adapters():
        ctx.backend.load_adapter(name, adapter.path)
        note_facts_version(name, adapter.metadata, FACTS_VERSION)  # a warning, never a refusal
    return name


def load_active(ctx: Context) -> dict[str, str]:
    """Make every active version resident now (the service's start with a remote backend);
    returns ref -> why the backend refused it, each also logged. A refused one stays
    refused later too: `unavailable` says so and the fallback moves on."""
    with ctx.db.read() as conn:
        active = [a for a in adapter_store.list_adapters(conn) if a.active]
    refused: dict[str, str] = {}
    for adapter in active:
        try:
            ensure_loaded(ctx, adapter)
        except MondrianError as exc:
            refused[adapter.ref] = exc.message
            log.warning("adapter %s not loaded: %s", adapter.ref, exc.message)
    return refused


def _active(ctx: Context, advisor_id: str) -> adapter_store.Adapter | None:
    with ctx.db.read() as conn:
        return adapter_store.get_active(conn, advisor_id)
