"""`mondrian serve` (its wiring, without starting a server) and `mondrian ab-report`."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI

from mondrian.cli.main import main
from mondrian.config import load_settings
from mondrian.schema import AnalysisResult, ModelInfo, example_critique
from mondrian.storage import images, jobs
from mondrian.storage.bootstrap import open_state


def test_serve_builds_the_app_from_flags(monkeypatch):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    code = main(
        [
            "serve",
            "--port",
            "5999",
            "--model-policy",
            "ab_test",
            "--ab-split",
            "0.25",
            "--queue-size",
            "3",
            "--concurrency",
            "4",
            "--model",
            "some/model",
        ]
    )
    assert code == 0
    app = served["app"]
    assert isinstance(app, FastAPI)
    assert (served["host"], served["port"]) == ("127.0.0.1", 5999)
    assert app.state.policy.name == "ab_test" and app.state.policy.ab_split == 0.25
    assert app.state.options.queue_size == 3
    assert app.state.options.concurrency == 4
    assert app.state.mondrian is None  # nothing is loaded before the server starts it


def test_serve_refuses_a_split_without_ab_test(monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not serve"))
    assert main(["serve", "--ab-split", "0.3"]) == 2
    assert "--ab-split applies only with --model-policy ab_test" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--ab-split", "1.5", "--model-policy", "ab_test"])
    assert main(["serve", "--concurrency", "0"]) == 2
    assert "invalid --concurrency: Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )


def _result(job_id: str, variant: str) -> AnalysisResult:
    return AnalysisResult(
        job_id=job_id,
        advisor_id="ansel",
        mode_requested="baseline",
        mode_used="baseline",
        model=ModelInfo(base="tiny", variant=variant),
        critique=example_critique(6).scored(),
        timings={"total_s": 0.5},
    )


def test_ab_report_command(capsys):
    settings = load_settings()
    with open_state(settings) as db:
        image_hash = db.write(
            images.store_image, settings.images_dir, b"\xff\xd8jpeg", "image/jpeg", 1, 1
        )
        for variant, ok in [("base", True), ("base", False), ("fine_tuned", True)]:
            job = db.write(jobs.create_job, "ansel", image_hash, "baseline", "tiny", variant)
            db.write(jobs.start_job, job.id)
            if ok:
                db.write(jobs.finish_job, job.id, _result(job.id, variant))
            else:
                db.write(jobs.fail_job, job.id, "not a valid critique")

    assert main(["ab-report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    base, tuned = report["variants"]
    assert (base["jobs"], base["done"], base["validity_rate"]) == (2, 1, 0.5)
    assert (tuned["jobs"], tuned["done"], tuned["validity_rate"]) == (1, 1, 1.0)
    assert tuned["mean_overall_score"] == 6.0 and tuned["latency_p50_s"] == 0.5

    assert main(["ab-report"]) == 0
    text = capsys.readouterr().out
    assert "schema-valid rate" in text and "50.0%" in text and "total jobs: 3" in text
