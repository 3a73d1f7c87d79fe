"""The whole demo (opt-in: about 1-2 minutes): `make test-slow` or `pytest -m slow`."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_the_adapter_learns(tmp_path):
    from mondrian.demo import run_demo

    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", say=lines.append, progress=False)

    assert summary.tiny and summary.adapter == "ansel@v1"
    assert summary.mae_reduction is not None and summary.mae_reduction >= 0.8
    assert summary.modes == {"baseline": "baseline", "rag": "rag", "lora": "lora"}
    assert summary.http_status == 200
    for path in summary.reports:
        assert path.is_file(), path
        if path.suffix == ".html":
            html = path.read_text()
            HTMLParser().feed(html)
            assert "</html>" in html
            if path.name != "advisor_bio.html":
                assert "<svg" in html  # the radar or the evaluation charts
    saved = json.loads((tmp_path / "demo" / "demo-summary.json").read_text())
    assert saved["mae_reduction_train"] == pytest.approx(summary.mae_reduction)
    assert any("TINY RANDOM-WEIGHT" in line for line in lines)
    assert any("--model Qwen/Qwen2.5-VL-3B-Instruct" in line for line in lines)
