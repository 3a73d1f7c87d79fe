"""Scores of a model variant against reference critiques, and the page that shows them.

The scores are pure functions, no model (`variant_metrics`); `write_eval_report` draws
an evaluation's JSON (run.py) as HTML: gates, per-variant table, per-dimension error
bars, score scatter against the reference, latency, how often checks fire
(facts/checks.py: a critique contradicting its photo's measured facts).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondrian.facts.checks import check_rate
from mondrian.reports.charts import grouped_bars, scatter
from mondrian.reports.render import render_page, write_page
from mondrian.schema import DIMENSION_LABELS, DIMENSIONS, Check, Critique, overall_score


@dataclass
class Sample:
    """One answer of one variant to one example."""

    reference: Critique
    critique: Critique | None  # None: the answer was not a valid critique
    stopped: bool
    latency_s: float
    new_tokens: int
    checks: list[Check] = field(default_factory=list)  # facts/checks.py on the critique


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
    # How often the valid critiques contradict their photo's facts (facts/checks.py's
    # check_rate): the share with at least one check, and each rule's share.
    checks: dict[str, Any] = field(default_factory=dict)


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
    metrics.checks = check_rate([s.checks for s in valid])
    return metrics


# --- the report ------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def write_eval_report(evaluation: dict[str, Any], advisor_name: str, path: Path) -> Path:
    variants = evaluation["variants"]
    labels = [DIMENSION_LABELS[key] for key in DIMENSIONS]
    mae_chart = grouped_bars(
        labels,
        {v["name"]: [v["mae"][key] for key in DIMENSIONS] for v in variants},
        label="mean absolute error per dimension",
    )
    points = {
        v["name"]: [
            (ref, pred[key])
            for row in evaluation["per_example"]
            if (pred := row.get(v["name"])) is not None
            for key, ref in row["reference"].items()
        ]
        for v in variants
    }
    latency_chart = grouped_bars(
        ["p50", "p95"],
        {v["name"]: [v["latency_p50_s"], v["latency_p95_s"]] for v in variants},
        label="latency in seconds",
        width=360,
    )
    rows = [
        {
            "name": v["name"],
            "count": v["count"],
            "valid": f"{100 * v['valid_rate']:.0f}%",
            "stop": f"{100 * v['stop_rate']:.0f}%",
            "mae": _fmt(v["mean_mae"]),
            "overall_mae": _fmt(v["overall_mae"]),
            "p50": _fmt(v["latency_p50_s"], 3),
            "p95": _fmt(v["latency_p95_s"], 3),
            "tps": f"{v['tokens_per_s']:.0f}",
            # An evaluation saved before checks existed has none to show.
            "checked": _share(v.get("checks", {}).get("with_checks")),
            "rules": {k: _share(r) for k, r in v.get("checks", {}).get("per_rule", {}).items()},
            "dims": [
                {
                    "label": DIMENSION_LABELS[key],
                    "mae": _fmt(v["mae"][key]),
                    "mse": _fmt(v["mse"][key]),
                    "rho": _fmt(v["spearman"][key]),
                }
                for key in DIMENSIONS
            ],
        }
        for v in variants
    ]
    footer = {
        "mondrian_version": evaluation["mondrian_version"],
        "generated_at": evaluation["created_at"],
        "schema_version": evaluation["schema_version"],
        "advisor_id": evaluation["advisor_id"],
        "model_base": str(evaluation["model"].get("model")),
        "model_adapter": str(evaluation["adapter"]),
        "dataset": f"{evaluation['dataset']['path']} ({evaluation['split']})",
    }
    html = render_page(
        "evaluation.html",
        {
            "advisor_name": advisor_name,
            "evaluation": evaluation,
            "rows": rows,
            "mae_chart": mae_chart,
            "scatter": scatter(points, label="model score against reference score"),
            "latency_chart": latency_chart,
        },
        footer,
    )
    return write_page(path, html)
