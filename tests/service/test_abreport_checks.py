"""The A/B report counts how often checks fire per arm, over the critiques that were
checked (those carrying facts), and per rule."""

from __future__ import annotations

from typing import Any

from test_abreport_validity import _job

from mondrian.facts.checks import run_checks
from mondrian.schema import AnalysisResult, Fact, ModelInfo, example_critique
from mondrian.service.abreport import compare_variants, format_report


def _checked(n: int, variant: str, tilt: float | None) -> dict[str, Any]:
    """A result scored 9 everywhere, with a measured tilt (None: measured nothing)."""
    critique = example_critique(9).scored()
    facts = [] if tilt is None else [Fact(name="tilt", value=tilt, unit="degrees", meaning="t")]
    return AnalysisResult(
        job_id=f"{n:032x}",
        advisor_id="ansel",
        mode_requested="baseline",
        mode_used="baseline",
        model=ModelInfo(base="tiny", variant=variant),
        critique=critique,
        facts=facts,
        checks=run_checks(critique, facts),
        timings={"total_s": 1.0},
    ).model_dump(mode="json")


def test_check_rates_per_arm_and_rule_leave_unchecked_jobs_out() -> None:
    jobs = [
        _job(1, "base", "done", _checked(1, "base", tilt=6.0)),
        _job(2, "base", "done", _checked(2, "base", tilt=0.0)),
        _job(3, "base", "done", _checked(3, "base", tilt=None)),  # before facts: left out
        _job(4, "fine_tuned", "done", _checked(4, "fine_tuned", tilt=0.5)),
        _job(5, "fine_tuned", "failed"),
    ]
    report = compare_variants(jobs)
    base, tuned = report.variants
    assert (base.checked, base.checked_rate) == (2, 0.5)
    assert base.check_rates["balance_score_tilted"] == 0.5
    assert base.check_rates["lighting_score_highlights_clipped"] == 0.0
    assert (tuned.checked, tuned.checked_rate) == (1, 0.0)
    assert report.delta["checked_rate"] == -0.5
    text = format_report(report)
    assert "with checks" in text and "base checks: balance_score_tilted 50%" in text


def test_an_arm_with_nothing_checked_has_no_rate() -> None:
    report = compare_variants([_job(1, "base", "done", _checked(1, "base", tilt=None))])
    base, tuned = report.variants
    assert base.checked == 0 and base.checked_rate is None and base.check_rates == {}
    assert tuned.checked_rate is None and report.delta["checked_rate"] is None
    stored = _checked(2, "base", tilt=6.0)
    stored["checks"] = [{"rule": "x"}]  # hand-written: not a check
    assert compare_variants([_job(2, "base", "done", stored)]).variants[0].checked == 0
