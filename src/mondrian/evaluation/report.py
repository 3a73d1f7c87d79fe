"""The evaluation's HTML page: gates, per-variant table, per-dimension error bars,
score scatter against the reference, latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mondrian.reports.charts import grouped_bars, scatter
from mondrian.reports.render import render_page, write_page
from mondrian.schema import DIMENSION_LABELS, DIMENSIONS


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


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
