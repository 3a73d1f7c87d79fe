"""The pure parts of the service: variant assignment and the A/B arithmetic."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid

import pytest

from mondrian.errors import InvalidInput
from mondrian.schema import AnalysisResult, ModelInfo, example_critique
from mondrian.service.abreport import compare_variants, format_report, percentile
from mondrian.service.errors import validation_message
from mondrian.service.policy import ModelPolicy, assignment_point
from mondrian.storage.jobs import Job


def test_assignment_is_a_fixed_function_of_the_job_id():
    job_ids = [uuid.UUID(int=i).hex for i in (42, 43, 7919)]
    points = [assignment_point(job_id) for job_id in job_ids]
    # The documented function: the job id's SHA-256, first 8 bytes, as a fraction of 2**64.
    for job_id, point in zip(job_ids, points, strict=True):
        digest = hashlib.sha256(job_id.encode()).digest()
        assert point == int.from_bytes(digest[:8], "big") / 2**64
        assert 0 <= point < 1
    assert len(set(points)) == len(points), "other ids, other points"
    # Fixed across processes too (a salted hash() would not be), so a job re-run after a
    # restart stays in its arm.
    code = (
        "import sys; from mondrian.service.policy import assignment_point; "
        "print(repr([assignment_point(j) for j in sys.argv[1:]]))"
    )
    for seed in ("1", "2"):
        child = subprocess.run(
            [sys.executable, "-c", code, *job_ids],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert child.stdout.strip() == repr(points)
    # The variant follows the point: fine_tuned below the split, base at or above it.
    for job_id, point in zip(job_ids, points, strict=True):
        for split in (point, point + 1e-9):
            expected = "fine_tuned" if point < split else "base"
            assert ModelPolicy("ab_test", split).variant_for(job_id) == expected


@pytest.mark.parametrize("split", [0.1, 0.5, 0.9])
def test_ab_split_holds_over_many_jobs(split):
    policy = ModelPolicy("ab_test", split)
    ids = [uuid.UUID(int=i * 7919).hex for i in range(4000)]
    share = sum(policy.variant_for(i) == "fine_tuned" for i in ids) / len(ids)
    assert abs(share - split) < 0.03


def test_split_edges_and_fixed_policies():
    ids = [uuid.uuid4().hex for _ in range(200)]
    assert {ModelPolicy("ab_test", 0.0).variant_for(i) for i in ids} == {"base"}
    assert {ModelPolicy("ab_test", 1.0).variant_for(i) for i in ids} == {"fine_tuned"}
    assert {ModelPolicy("base").variant_for(i) for i in ids} == {"base"}
    assert {ModelPolicy("fine_tuned").variant_for(i) for i in ids} == {"fine_tuned"}
    with pytest.raises(InvalidInput, match="unknown model policy"):
        ModelPolicy("canary")
    with pytest.raises(InvalidInput, match="split"):
        ModelPolicy("ab_test", 1.5)


def test_percentile_matches_linear_interpolation():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(8.8)  # numpy.percentile gives 8.8
    assert percentile(list(reversed(values)), 0) == 1.0


def _job(n: int, variant: str, status: str, score: int = 7, seconds: float | None = 1.0, **kw):
    result = None
    timings = {}
    if status == "done":
        timings = {"total_s": seconds} if seconds is not None else {}
        result = AnalysisResult(
            job_id=f"{n:032x}",
            advisor_id="ansel",
            mode_requested="lora",
            mode_used=kw.get("mode_used", "baseline"),
            model=ModelInfo(base="tiny", variant=variant),
            critique=example_critique(score).scored(),
            timings=timings,
        ).model_dump(mode="json")
    return Job(
        id=f"{n:032x}",
        advisor_id="ansel",
        image_hash="0" * 64,
        mode_requested="lora",
        mode_used=kw.get("mode_used", "baseline") if status == "done" else None,
        model_id="tiny",
        variant=variant,
        adapter_version=kw.get("adapter_version"),
        status=status,
        progress=1.0 if status == "done" else 0.0,
        timings=timings,
        result=result,
        created_at="2026-01-01T00:00:00.000000Z",
        started_at=kw.get("started_at", "2026-01-01T00:00:00.000000Z"),
        finished_at=kw.get("finished_at", "2026-01-01T00:00:02.500000Z"),
    )


def test_compare_variants():
    rows = [
        _job(1, "base", "done", score=4, seconds=1.0),
        _job(2, "base", "done", score=6, seconds=3.0),
        _job(3, "base", "failed"),
        _job(4, "fine_tuned", "done", score=8, seconds=2.0, mode_used="lora", adapter_version=2),
        _job(5, "fine_tuned", "done", score=9, seconds=None, mode_used="lora", adapter_version=2),
        _job(6, "fine_tuned", "queued"),
    ]
    report = compare_variants(rows)
    base, tuned = report.variants
    assert report.total_jobs == 6
    assert (base.jobs, base.done, base.failed, base.pending) == (3, 2, 1, 0)
    assert base.validity_rate == round(2 / 3, 4)
    assert (base.latency_p50_s, base.latency_p95_s) == (2.0, 2.9)
    assert base.mean_overall_score == 5.0
    assert (tuned.jobs, tuned.done, tuned.failed, tuned.pending) == (3, 2, 0, 1)
    assert tuned.validity_rate == 1.0
    # Job 5 recorded no total_s: its latency comes from its timestamps (2.5 s).
    assert tuned.latency_p50_s == 2.25
    assert tuned.adapters == {"ansel@v2": 2} and tuned.modes_used == {"lora": 2}
    assert report.delta["mean_overall_score"] == 3.5
    assert report.delta["validity_rate"] == round(1 - round(2 / 3, 4), 4)
    text = format_report(report)
    assert "schema-valid rate" in text and "66.7%" in text and "ansel@v2 (2)" in text


def test_compare_variants_with_no_jobs():
    report = compare_variants([])
    assert [v.variant for v in report.variants] == ["base", "fine_tuned"]
    assert all(v.jobs == 0 and v.validity_rate is None for v in report.variants)
    assert set(report.delta.values()) == {None}


def test_validation_messages_name_the_fields():
    code, message, fields = validation_message(
        [{"type": "missing", "loc": ("body", "image"), "msg": "Field required"}]
    )
    assert (code, fields) == ("missing_field", ["image"]) and "'image'" in message
    code, message, fields = validation_message(
        [{"type": "less_than_equal", "loc": ("body", "critique", "x"), "msg": "too big"}]
    )
    assert (code, fields) == ("invalid_field", ["critique.x"]) and "critique.x: too big" in message


def test_host_names_and_multipart_charsets():
    from mondrian.service.guards import host_name, utf8_multipart

    assert host_name("LocalHost:5100") == "localhost"
    assert host_name("[::1]:5100") == "::1" and host_name("::1") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert utf8_multipart("multipart/form-data; boundary=x")
    assert utf8_multipart('multipart/form-data; charset="UTF-8"; boundary=x')
    assert not utf8_multipart("multipart/form-data; boundary=x; charset=latin-1")
    assert utf8_multipart("application/json; charset=latin-1")  # not multipart: not ours


def test_serve_adds_its_bind_address_to_the_served_hosts_and_bounds_uvicorn(monkeypatch):
    from mondrian.cli.main import build_parser
    from mondrian.cli.serve_cmd import serve_settings
    from mondrian.service.server import GuardedH11Protocol, uvicorn_options

    monkeypatch.setenv("MONDRIAN_HEADER_TIMEOUT_S", "3")
    monkeypatch.setenv("MONDRIAN_MAX_CONNECTIONS_PER_CLIENT", "5")
    parse = build_parser().parse_args
    settings = serve_settings(parse(["serve", "--host", "10.1.2.3"]))
    assert settings.allowed_hosts == ["localhost", "127.0.0.1", "::1", "10.1.2.3"]
    assert serve_settings(parse(["serve", "--host", "0.0.0.0"])).allowed_hosts == [
        "localhost",
        "127.0.0.1",
        "::1",
    ]
    options = uvicorn_options(settings)
    protocol = options.pop("http")
    assert issubclass(protocol, GuardedH11Protocol)
    assert (protocol.header_timeout_s, protocol.max_per_client) == (3.0, 5)
    # Each server counts its own connections.
    assert protocol.open_by_client is not uvicorn_options(settings)["http"].open_by_client
    assert options == {
        "timeout_keep_alive": 5,
        "limit_concurrency": 256,
        "timeout_graceful_shutdown": 30,
        "h11_max_incomplete_event_size": 64 * 1024,
    }
