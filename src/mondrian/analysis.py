"""The analyze use case: a critique of one photo as one advisor in one mode.

`analyze()` picks the strategy (falling back lora -> rag -> baseline, strategies/registry.py),
runs it and describes what served. `run_job()` is a started job's whole run, from its
stored photo to its stored result: `mondrian analyze` (cli/analyze_cmd.py) and the
service's worker (service/worker.py) both go through it, so a critique is recorded the same
way whichever door it came in by. Recording a failure stays with the caller: the CLI shows
the error, the service keeps internal errors' details in its log.

The photo's facts (facts/measure.py: pixels and EXIF, no model) are measured once here,
before the strategy runs: they go into its prompt ("Measured:", prompts.py) and into the
result, with the checks (facts/checks.py) the final critique breaks against them."""

from __future__ import annotations

import dataclasses
import logging
import time

from mondrian.advisors import Advisor
from mondrian.backends.protocol import TokenCallback
from mondrian.context import Context
from mondrian.facts.checks import run_checks
from mondrian.facts.measure import measure
from mondrian.images import Photo, read_image_file
from mondrian.modes import Variant
from mondrian.schema import AnalysisResult, ModelInfo
from mondrian.storage import advisors, images, jobs
from mondrian.storage.jobs import Job
from mondrian.strategies.registry import STRATEGIES, Fallback

log = logging.getLogger(__name__)


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
    measuring = time.perf_counter()
    facts = measure(photo)
    facts_s = round(time.perf_counter() - measuring, 4)
    outcome = strategy.run(ctx, advisor, photo, on_token, facts=facts)
    critique = outcome.critique.scored(advisor.weights)
    timings = {
        **outcome.timings,
        "facts_s": facts_s,
        "total_s": round(time.perf_counter() - started, 4),
    }
    return AnalysisResult(
        advisor_id=advisor.id,
        mode_requested=mode,
        mode_used=strategy.name,
        model=ModelInfo(
            base=ctx.backend.model_id,
            adapter=outcome.adapter,
            variant=Variant.FINE_TUNED if outcome.adapter else Variant.BASE,
            backend=ctx.backend.name,
            engine=outcome.generation.engine,
        ),
        critique=critique,
        references=outcome.references,
        facts=facts,
        # On the final critique, after generation: checks inform, they never rescore.
        checks=run_checks(critique, facts),
        timings=timings,
    )


def run_job(
    ctx: Context,
    job: Job,
    on_token: TokenCallback | None = None,
    *,
    policy_applies: bool = True,
) -> AnalysisResult:
    """Critique a started job's stored photo in the mode it asked for, and record the
    result on the job; returns the analysis as stored (with the job's id).

    The job's variant (the arm a model policy drew) limits what may serve; where no
    policy applies (`mondrian analyze`), `policy_applies=False` leaves adapters allowed."""
    settings = ctx.settings
    with ctx.db.read() as conn:
        advisor = advisors.require_advisor(conn, job.advisor_id)
        path = images.image_path(conn, settings.images_dir, job.image_hash)
    photo = read_image_file(
        path, max_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels
    )
    variant = job.variant if policy_applies else None
    result = analyze(ctx, advisor, photo, job.mode_requested, variant=variant, on_token=on_token)
    done = ctx.db.write(jobs.finish_job, job.id, result)
    return done.analysis() or result
