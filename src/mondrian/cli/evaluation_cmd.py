"""Measuring models from the command line: `mondrian evaluate` compares the base model
with an adapter on a data set split, with gates for CI and rollouts; `mondrian ab-report`
compares the served variants (base, fine_tuned) over the jobs the service recorded."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mondrian.cli.common import (
    add_model_args,
    open_db,
    positive_int,
    print_json,
    read_db,
    settings_from,
)

GATE_FAILED = 1
AB_WINDOW = 10_000  # ab-report: the latest jobs compared


def register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare the base model with an adapter on a dataset split",
        description="Run the base model and an advisor's adapter (and the merged model with "
        "--merged) on a dataset split; report validity, stop rate, per-dimension MAE, MSE "
        "and Spearman, overall-score MAE, latency and tokens/s. Exits 1 when a gate fails.",
    )
    parser.add_argument("--advisor", required=True, help="advisor id")
    parser.add_argument("--adapter", help="version to evaluate, e.g. ansel@v2 (default: active)")
    parser.add_argument("--dataset", type=Path, help="dataset dir (default: the adapter's)")
    parser.add_argument(
        "--split",
        choices=("validation", "val", "train"),
        default="validation",
        help="which split (val: the old name of validation)",
    )
    parser.add_argument("--out", type=Path, help="write evaluation.json and evaluation.html here")
    parser.add_argument("--merged", action="store_true", help="also evaluate the merged model")
    parser.add_argument(
        "--min-valid",
        type=float,
        help="gate: adapter valid rate at least F (default: 1.0 when --max-mae is given)",
    )
    parser.add_argument(
        "--max-mae",
        type=float,
        help="gate: adapter mean MAE at most F; the MAE is over valid answers only, so this "
        "gate also requires --min-valid (1.0 unless given)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_model_args(parser)
    parser.set_defaults(handler=evaluate_command)


def effective_min_valid(min_valid: float | None, max_mae: float | None) -> float | None:
    """The valid-rate gate that applies: 1.0 under --max-mae unless one was given.

    The MAE is computed over the valid answers only, so an adapter that answers one photo in
    ten validly could pass an MAE gate on that one; the MAE gate alone would say nothing.
    """
    if min_valid is None and max_mae is not None:
        return 1.0
    return min_valid


def gate_failures(adapter_metrics, min_valid: float | None, max_mae: float | None) -> list[str]:
    min_valid = effective_min_valid(min_valid, max_mae)
    failures = []
    if min_valid is not None and adapter_metrics.valid_rate < min_valid:
        failures.append(f"valid rate {adapter_metrics.valid_rate:.3f} < --min-valid {min_valid}")
    if max_mae is not None:
        mae = adapter_metrics.mean_mae
        if mae is None or mae > max_mae:
            shown = "n/a (no valid answer)" if mae is None else f"{mae:.3f}"
            failures.append(f"mean MAE {shown} > --max-mae {max_mae}")
    return failures


def evaluate_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mondrian.backends.protocol import create_backend
    from mondrian.evaluation.run import evaluate
    from mondrian.preflight import check_evaluation

    settings = settings_from(args)
    with open_db(settings) as db:
        check_evaluation(db, args.advisor, args.adapter, args.dataset, args.split)
        backend = create_backend(settings)
        bars: dict[str, tqdm] = {}

        def progress(variant: str, done: int, total: int) -> None:
            bar = bars.get(variant)
            if bar is None:
                bar = bars[variant] = tqdm(total=total, desc=variant, unit="ex", file=sys.stderr)
            bar.update(done - bar.n)
            if done == total:
                bar.close()

        evaluation = evaluate(
            settings,
            db,
            backend,
            args.advisor,
            adapter_ref=args.adapter,
            dataset_dir=args.dataset,
            split=args.split,
            out_dir=args.out,
            merged=args.merged,
            on_progress=progress,
        )
    if args.json:
        print_json(evaluation.to_json())
    else:
        print(
            f"{args.advisor} · {evaluation.adapter} · {args.split} split · "
            f"{evaluation.dataset['examples']} examples"
        )
        print(
            f"{'variant':<10}{'valid':>7}{'stop':>7}{'MAE':>8}{'overall':>9}"
            f"{'p50 s':>8}{'p95 s':>8}{'tok/s':>8}"
        )
        for v in evaluation.variants:
            mae = "-" if v.mean_mae is None else f"{v.mean_mae:.2f}"
            overall = "-" if v.overall_mae is None else f"{v.overall_mae:.2f}"
            print(
                f"{v.name:<10}{v.valid_rate:>7.0%}{v.stop_rate:>7.0%}{mae:>8}{overall:>9}"
                f"{v.latency_p50_s:>8.3f}{v.latency_p95_s:>8.3f}{v.tokens_per_s:>8.0f}"
            )
        if args.out:
            print(f"\nwrote {args.out / 'evaluation.json'} and {args.out / 'evaluation.html'}")
    failures = gate_failures(evaluation.variant("adapter"), args.min_valid, args.max_mae)
    for failure in failures:
        print(f"mondrian: gate failed: {failure}", file=sys.stderr)
    return GATE_FAILED if failures else 0


def register_ab_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ab-report",
        help="compare model variants (A/B) over recorded jobs",
        description=(
            "Per variant (base, fine_tuned): jobs, latency p50/p95, mean overall score and "
            "schema-valid rate (jobs whose stored critique validates against the schema, over "
            "done + failed), from the jobs the service recorded."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=AB_WINDOW,
        help=f"compare the latest N jobs (default {AB_WINDOW})",
    )
    parser.set_defaults(handler=ab_report_command)


def ab_report_command(args: argparse.Namespace) -> int:
    from mondrian.service.abreport import compare_variants, format_report
    from mondrian.storage import jobs

    with read_db(settings_from(args)) as db, db.read() as conn:
        recent = jobs.list_jobs(conn, limit=args.limit)
    report = compare_variants(recent)
    if args.json:
        print_json(report.model_dump(mode="json"))
    else:
        print(format_report(report))
    return 0
