"""The A/B report's schema-valid rate counts schema-valid critiques, not done jobs."""

from __future__ import annotations

from typing import Any

from mondrian.schema import AnalysisResult, ModelInfo, example_critique
from mondrian.service.abreport import compare_variants, format_report
from mondrian.storage.jobs import Job


def _result(n: int, variant: str, score: int) -> dict[str, Any]:
    return AnalysisResult(
        job_id=f"{n:032x}",
        advisor_id="ansel",
        mode_requested="baseline",
        mode_used="baseline",
        model=ModelInfo(base="tiny", variant=variant),
        critique=example_critique(score).scored(),
        timings={"total_s": 1.0},
    ).model_dump(mode="json")


def _job(n: int, variant: str, status: str, result: dict[str, Any] | None = None) -> Job:
    return Job(
        id=f"{n:032x}",
        advisor_id="ansel",
        image_hash="0" * 64,
        mode_requested="baseline",
        mode_used="baseline" if status == "done" else None,
        model_id="tiny",
        variant=variant,
        adapter_version=None,
        status=status,
        progress=1.0 if status == "done" else 0.0,
        timings={"total_s": 1.0} if status == "done" else {},
        result=result,
        created_at="2026-01-01T00:00:00.000000Z",
        started_at="2026-01-01T00:00:00.000000Z",
        finished_at="2026-01-01T00:00:01.000000Z",
    )


def _invalid(n: int, variant: str, how: str) -> dict[str, Any]:
    """A done job's result whose critique breaks the schema in one way."""
    result = _result(n, variant, score=5)
    critique = result["critique"]
    if how == "score out of range":
        critique["dimensions"]["composition"]["score"] = 42
    elif how == "missing dimension":
        del critique["dimensions"]["composition"]
    elif how == "extra field":
        critique["mood"] = "gloomy"
    elif how == "no critique":
        del result["critique"]
    return result


def test_done_but_invalid_jobs_do_not_count_as_schema_valid():
    rows = [
        _job(1, "base", "done", _result(1, "base", 4)),
        _job(2, "base", "done", _invalid(2, "base", "score out of range")),
        _job(3, "base", "done", _invalid(3, "base", "missing dimension")),
        _job(4, "base", "failed"),
        _job(5, "fine_tuned", "done", _result(5, "fine_tuned", 8)),
        _job(6, "fine_tuned", "done", _result(6, "fine_tuned", 6)),
        _job(7, "fine_tuned", "done", _invalid(7, "fine_tuned", "extra field")),
        _job(8, "fine_tuned", "done", _invalid(8, "fine_tuned", "no critique")),
        _job(9, "fine_tuned", "queued"),
    ]
    base, tuned = compare_variants(rows).variants
    # Base: 4 finished (3 done + 1 failed), 1 valid critique.
    assert (base.done, base.failed, base.schema_valid) == (3, 1, 1)
    assert base.validity_rate == 0.25
    # Fine-tuned: 4 done, 2 valid; the queued job is not in the denominator.
    assert (tuned.done, tuned.failed, tuned.pending, tuned.schema_valid) == (4, 0, 1, 2)
    assert tuned.validity_rate == 0.5
    # The mean overall score is over valid critiques only (base 4; fine-tuned mean of 8 and 6).
    assert base.mean_overall_score == 4.0 and tuned.mean_overall_score == 7.0
    text = format_report(compare_variants(rows))
    assert "25.0%" in text and "50.0%" in text
    assert "schema valid" in text


def test_all_valid_done_jobs_give_a_full_rate():
    rows = [_job(n, "base", "done", _result(n, "base", 7)) for n in range(1, 4)]
    base, tuned = compare_variants(rows).variants
    assert (base.schema_valid, base.validity_rate) == (3, 1.0)
    assert tuned.validity_rate is None
