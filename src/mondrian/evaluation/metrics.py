"""Scores of a model variant against reference critiques. Pure functions, no model."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mondrian.schema import DIMENSIONS, Critique, overall_score


@dataclass
class Sample:
    """One answer of one variant to one example."""

    reference: Critique
    critique: Critique | None  # None: the answer was not a valid critique
    stopped: bool
    latency_s: float
    new_tokens: int


@dataclass
class VariantMetrics:
    name: str
    count: int
    valid_rate: float
    stop_rate: float
    mae: dict[str, float | None] = field(default_factory=dict)
    mse: dict[str, float | None] = field(default_factory=dict)
    spearman: dict[str, float | None] = field(default_factory=dict)
    mean_mae: float | None = None
    overall_mae: float | None = None
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    tokens_per_s: float = 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share their mean rank
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when undefined (fewer than 2 or a constant side)."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return None
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy)


def variant_metrics(
    name: str, samples: Sequence[Sample], weights: Mapping[str, float] | None
) -> VariantMetrics:
    valid = [s for s in samples if s.critique is not None]
    metrics = VariantMetrics(
        name=name,
        count=len(samples),
        valid_rate=len(valid) / len(samples) if samples else 0.0,
        stop_rate=sum(s.stopped for s in samples) / len(samples) if samples else 0.0,
    )
    for key in DIMENSIONS:
        refs = [getattr(s.reference.dimensions, key).score for s in valid]
        preds = [getattr(s.critique.dimensions, key).score for s in valid]  # type: ignore[union-attr]
        errors = [p - r for p, r in zip(preds, refs, strict=True)]
        metrics.mae[key] = statistics.fmean(abs(e) for e in errors) if errors else None
        metrics.mse[key] = statistics.fmean(e * e for e in errors) if errors else None
        metrics.spearman[key] = spearman(preds, refs)
    maes = [v for v in metrics.mae.values() if v is not None]
    metrics.mean_mae = statistics.fmean(maes) if maes else None
    if valid:
        metrics.overall_mae = statistics.fmean(
            abs(
                overall_score(s.critique.dimensions.scores(), weights)  # type: ignore[union-attr]
                - overall_score(s.reference.dimensions.scores(), weights)
            )
            for s in valid
        )
    latencies = [s.latency_s for s in samples]
    metrics.latency_p50_s = percentile(latencies, 50)
    metrics.latency_p95_s = percentile(latencies, 95)
    total_time = sum(latencies)
    metrics.tokens_per_s = sum(s.new_tokens for s in samples) / total_time if total_time else 0.0
    return metrics
