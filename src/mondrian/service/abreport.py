"""The A/B comparison of model variants, computed from the job table alone (pure).

Per variant: how many jobs, how many finished done or failed, latency p50/p95 of the
done ones (the analysis time the job recorded, `total_s`; else finished - started), the
mean overall score of their critiques, and the schema-valid rate: the finished jobs whose
stored critique validates against `Critique` (src/mondrian/schema.py), over all finished
jobs. A done job is not counted valid for being done: its result is checked here, so a
row written by an older version, by hand, or by a path that skipped validation counts
against the rate, and a failed job (no critique) always does.

How often checks fire (facts/checks.py: a critique contradicting its photo's measured
facts) is counted over the valid critiques that carry facts; a job recorded before facts
were measured was never checked and is left out of that rate rather than counted clean.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from statistics import fmean

from pydantic import BaseModel, Field, ValidationError

from mondrian.facts.checks import check_rate
from mondrian.modes import Variant
from mondrian.schema import Check, Critique
from mondrian.storage.jobs import Job


class VariantStats(BaseModel):
    variant: str
    jobs: int = Field(description="Jobs assigned this variant, in any status.")
    done: int
    failed: int
    pending: int = Field(description="Queued or running.")
    latency_p50_s: float | None
    latency_p95_s: float | None
    mean_overall_score: float | None
    schema_valid: int = Field(description="Done jobs whose stored critique is schema valid.")
    validity_rate: float | None = Field(
        description="schema_valid / (done + failed); None if no job finished."
    )
    modes_used: dict[str, int] = Field(default_factory=dict)
    adapters: dict[str, int] = Field(
        default_factory=dict, description="Adapter version -> jobs it served."
    )
    checked: int = Field(default=0, description="Valid critiques that carry measured facts.")
    checked_rate: float | None = Field(
        default=None,
        description="Share of the checked critiques with at least one check; None if none.",
    )
    check_rates: dict[str, float] = Field(
        default_factory=dict, description="Rule id -> share of the checked critiques it fired on."
    )


class ABReport(BaseModel):
    total_jobs: int
    variants: list[VariantStats]
    # fine_tuned minus base, where both sides have a value.
    delta: dict[str, float | None]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _seconds(job: Job) -> float | None:
    total = job.timings.get("total_s")
    if total is not None:
        return float(total)
    if job.started_at and job.finished_at:
        started = datetime.fromisoformat(job.started_at.replace("Z", "+00:00"))
        finished = datetime.fromisoformat(job.finished_at.replace("Z", "+00:00"))
        return (finished - started).total_seconds()
    return None


def _overall(job: Job) -> float | None:
    critique = (job.result or {}).get("critique") or {}
    score = critique.get("overall_score")
    return None if score is None else float(score)


def _schema_valid(job: Job) -> bool:
    """Whether the job's stored critique validates against the critique schema."""
    critique = (job.result or {}).get("critique")
    if not isinstance(critique, dict):
        return False
    try:
        Critique.model_validate(critique)
    except ValidationError:
        return False
    return True


def _checks(job: Job) -> list[Check] | None:
    """The checks of a job whose result carries facts; None where nothing was measured."""
    result = job.result or {}
    if not result.get("facts"):
        return None
    try:
        return [Check.model_validate(check) for check in result.get("checks") or []]
    except ValidationError:  # a row written by hand or by another version: not checked
        return None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def variant_stats(variant: str, jobs: Sequence[Job]) -> VariantStats:
    done = [j for j in jobs if j.status == "done"]
    failed = [j for j in jobs if j.status == "failed"]
    valid = [j for j in done if _schema_valid(j)]
    latencies = [s for s in map(_seconds, done) if s is not None]
    # Only a valid critique's overall score is one the schema vouches for.
    scores = [s for s in map(_overall, valid) if s is not None]
    finished = len(done) + len(failed)
    checked = [c for c in map(_checks, valid) if c is not None]
    rates = check_rate(checked)
    return VariantStats(
        variant=variant,
        jobs=len(jobs),
        done=len(done),
        failed=len(failed),
        pending=len(jobs) - finished,
        latency_p50_s=_round(percentile(latencies, 50)),
        latency_p95_s=_round(percentile(latencies, 95)),
        mean_overall_score=_round(fmean(scores)) if scores else None,
        schema_valid=len(valid),
        validity_rate=_round(len(valid) / finished) if finished else None,
        modes_used=dict(sorted(Counter(j.mode_used for j in done if j.mode_used).items())),
        adapters=dict(sorted(Counter(j.adapter_ref for j in done if j.adapter_ref).items())),
        checked=len(checked),
        checked_rate=rates["with_checks"] if checked else None,
        check_rates=rates["per_rule"] if checked else {},
    )


def compare_variants(jobs: Iterable[Job]) -> ABReport:
    """The report over `jobs`; both variants always appear, with zeros if unused."""
    by_variant: dict[str, list[Job]] = {v: [] for v in Variant}
    for job in jobs:
        by_variant.setdefault(job.variant, []).append(job)
    stats = [variant_stats(v, js) for v, js in by_variant.items()]
    base, tuned = stats[0], stats[1]

    def diff(field: str) -> float | None:
        a, b = getattr(tuned, field), getattr(base, field)
        return None if a is None or b is None else round(a - b, 4)

    return ABReport(
        total_jobs=sum(s.jobs for s in stats),
        variants=stats,
        delta={
            f: diff(f)
            for f in (
                "latency_p50_s",
                "latency_p95_s",
                "mean_overall_score",
                "validity_rate",
                "checked_rate",
            )
        },
    )


def format_report(report: ABReport) -> str:
    """A plain-text table for the terminal."""

    def cell(value: float | int | None, fmt: str = "{:.3f}") -> str:
        return "-" if value is None else fmt.format(value)

    rows = [
        ("jobs", [cell(s.jobs, "{}") for s in report.variants]),
        ("done", [cell(s.done, "{}") for s in report.variants]),
        ("failed", [cell(s.failed, "{}") for s in report.variants]),
        ("schema valid", [cell(s.schema_valid, "{}") for s in report.variants]),
        ("pending", [cell(s.pending, "{}") for s in report.variants]),
        ("latency p50 (s)", [cell(s.latency_p50_s) for s in report.variants]),
        ("latency p95 (s)", [cell(s.latency_p95_s) for s in report.variants]),
        ("mean overall score", [cell(s.mean_overall_score, "{:.2f}") for s in report.variants]),
        ("schema-valid rate", [cell(s.validity_rate, "{:.1%}") for s in report.variants]),
        ("with checks", [cell(s.checked_rate, "{:.1%}") for s in report.variants]),
    ]
    heads = [s.variant for s in report.variants]
    width = max(len(r[0]) for r in rows)
    col = max(12, *(len(h) for h in heads))
    lines = [f"{'':<{width}}  " + "  ".join(f"{h:>{col}}" for h in heads)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{v:>{col}}" for v in vals) for name, vals in rows]
    for stats in report.variants:
        if stats.adapters:
            served = ", ".join(f"{ref} ({n})" for ref, n in stats.adapters.items())
            lines.append(f"{stats.variant} adapters: {served}")
    for stats in report.variants:
        fired = {rule: rate for rule, rate in stats.check_rates.items() if rate}
        if fired:
            shares = ", ".join(f"{rule} {rate:.0%}" for rule, rate in fired.items())
            lines.append(f"{stats.variant} checks: {shares}")
    lines.append(f"total jobs: {report.total_jobs}")
    return "\n".join(lines)
