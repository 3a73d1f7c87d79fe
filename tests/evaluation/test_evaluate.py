"""`mondrian evaluate` on a tiny model: metrics, self-describing results, gates both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mondrian.cli.evaluation_cmd import effective_min_valid, gate_failures
from mondrian.cli.main import main
from mondrian.config import load_settings
from mondrian.errors import InvalidInput
from mondrian.evaluation.metrics import (
    Sample,
    VariantMetrics,
    percentile,
    spearman,
    variant_metrics,
)
from mondrian.evaluation.run import load_examples
from mondrian.facts.checks import RULES, run_checks
from mondrian.prompts import critique_prompt
from mondrian.schema import DIMENSIONS, Fact, example_critique
from mondrian.storage import adapters
from mondrian.storage.bootstrap import open_state

ASSETS = Path(__file__).parents[1] / "assets" / "photos"


# --- metrics, no model --------------------------------------------------------------------


def _critique(score: int):
    return example_critique(score)


def test_metrics_of_perfect_and_wrong_answers():
    perfect = [Sample(_critique(s), _critique(s), True, 0.5, 100) for s in (2, 5, 8)]
    m = variant_metrics("adapter", perfect, None)
    assert m.valid_rate == 1.0 and m.stop_rate == 1.0 and m.mean_mae == 0.0
    assert m.overall_mae == 0.0 and m.spearman["lighting"] == pytest.approx(1.0)
    assert m.tokens_per_s == pytest.approx(200.0)

    wrong = [Sample(_critique(s), _critique(10 - s), False, 1.0, 10) for s in (2, 5, 8)]
    w = variant_metrics("base", [*wrong, Sample(_critique(1), None, False, 2.0, 5)], None)
    assert w.valid_rate == 0.75 and w.stop_rate == 0.0
    assert w.mae["composition"] == pytest.approx((6 + 0 + 6) / 3)
    assert w.mse["composition"] == pytest.approx((36 + 0 + 36) / 3)
    assert w.spearman["composition"] == pytest.approx(-1.0)


def test_metrics_count_how_often_checks_fire():
    tilted = [Fact(name="tilt", value=6.0, unit="degrees", meaning="tilt")]
    strong, modest = _critique(9), _critique(5)
    samples = [
        Sample(strong, strong, True, 0.5, 10, checks=run_checks(strong, tilted)),
        Sample(strong, modest, True, 0.5, 10, checks=run_checks(modest, tilted)),
        Sample(strong, None, False, 0.5, 10),  # invalid: not counted
    ]
    rate = variant_metrics("adapter", samples, None).checks
    assert rate["critiques"] == 2 and rate["with_checks"] == 0.5
    assert rate["per_rule"]["balance_score_tilted"] == 0.5
    assert rate["per_rule"]["lighting_score_highlights_clipped"] == 0.0


def test_examples_use_the_facts_their_row_recorded(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "red.jpg")
    recorded = [{"name": "tilt", "value": 4.0, "unit": "degrees", "meaning": "t"}]
    rows = [
        {"messages": _messages(), "images": ["red.jpg"], "mondrian": {"facts": recorded}},
        {"messages": _messages(), "images": ["red.jpg"]},  # before facts: measured now
    ]
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (given, measured), _ = load_examples(tmp_path, "validation")
    assert [f.model_dump() for f in given.facts] == recorded
    assert {f.name for f in measured.facts} >= {"tilt", "highlights_clipped", "zones"}
    rows[0]["mondrian"]["facts"] = [{"name": "tilt"}]
    (tmp_path / "validation.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(InvalidInput, match="line 1: not a list of facts"):
        load_examples(tmp_path, "validation")


def _messages() -> list[dict]:
    return [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": _short_target([5] * 8)},
    ]


def test_percentile_and_spearman_edge_cases():
    assert percentile([], 50) == 0.0 and percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [1]) is None
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


# --- the run, on a tiny model ---------------------------------------------------------------


def _short_target(scores: list[int]) -> str:
    critique = example_critique().model_dump(exclude_none=True)
    critique["image_description"] = "a photo"
    critique["strengths"], critique["improvements"] = ["tone"], ["crop"]
    for key, score in zip(DIMENSIONS, scores, strict=True):
        critique["dimensions"][key] = {"score": score, "comment": "ok", "recommendation": "try"}
    return json.dumps(critique, separators=(",", ":"))


def _write_dataset(root: Path, advisor, examples: int = 3) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rows = []
    for i, photo in enumerate(sorted(ASSETS.glob("*.jpg"))[:examples]):
        shutil.copy(photo, root / "images" / photo.name)
        prompt = critique_prompt(advisor, Image.open(photo))
        messages = prompt.messages()
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": _short_target([i + 3] * 8)}]}
        )
        rows.append(json.dumps({"messages": messages, "images": [f"images/{photo.name}"]}))
    (root / "val.jsonl").write_text("\n".join(rows) + "\n")
    (root / "manifest.json").write_text(json.dumps({"advisor": advisor.id, "sha256": "x" * 64}))
    return root


def _register(tmp_path, tiny_checkpoint_factory, random_adapter_factory, examples: int):
    from transformers import AutoModelForImageTextToText

    from mondrian.backends.decoding.fingerprint import model_fingerprint

    model = tiny_checkpoint_factory()
    fingerprint = model_fingerprint(AutoModelForImageTextToText.from_pretrained(model))
    adapter_dir = random_adapter_factory(model, tmp_path / "ansel-v1", 1, fingerprint)
    settings = load_settings()
    with open_state(settings) as db:
        with db.read() as conn:
            from mondrian.storage.advisors import require_advisor

            advisor = require_advisor(conn, "ansel")
        dataset = _write_dataset(tmp_path / "dataset", advisor, examples)
        version = db.write(
            adapters.register_adapter,
            "ansel",
            str(adapter_dir),
            str(model),
            {"dataset": {"path": str(dataset)}},
        )
        db.write(adapters.activate, "ansel", version)
    return model, dataset


@pytest.fixture
def registered(tmp_path, tiny_checkpoint_factory, random_adapter_factory, monkeypatch):
    monkeypatch.setenv("MONDRIAN_MAX_TEXT_CHARS", "24")
    return _register(tmp_path, tiny_checkpoint_factory, random_adapter_factory, examples=3)


@pytest.fixture
def registered_one(tmp_path, tiny_checkpoint_factory, random_adapter_factory, monkeypatch):
    # The gates' exit codes need a real run each, not three photos: one photo and the
    # shortest answers the schema admits keep two runs (four generations) cheap on a
    # loaded machine (three photos made it 28 s idle and past 600 s on a busy 2-core one).
    monkeypatch.setenv("MONDRIAN_MAX_TEXT_CHARS", "8")
    monkeypatch.setenv("MONDRIAN_MAX_LIST_ITEMS", "1")
    return _register(tmp_path, tiny_checkpoint_factory, random_adapter_factory, examples=1)


@pytest.mark.model
def test_evaluate_writes_self_describing_results(registered, tmp_path, capsys):
    model, dataset = registered
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--advisor",
            "ansel",
            "--model",
            str(model),
            "--out",
            str(out),
            "--merged",
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in data["variants"]] == ["base", "adapter", "merged"]
    for variant in data["variants"]:
        assert variant["valid_rate"] == 1.0 and variant["count"] == 3
        assert variant["latency_p95_s"] >= variant["latency_p50_s"] > 0
    adapter, merged = data["variants"][1], data["variants"][2]
    assert adapter["mae"] == pytest.approx(merged["mae"]), "merged must answer as the adapter"
    assert data["adapter"] == "ansel@v1" and data["dataset"]["path"] == str(dataset)
    assert data["dataset"]["split_sha256"] and data["prompt_version"] and data["mondrian_version"]
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["variants"] == data["variants"]
    html = (out / "evaluation.html").read_text()
    assert "<svg" in html and "ansel@v1" in html and "<script" not in html
    # Checks against the photos' facts (measured here: these rows predate recorded facts).
    for variant in data["variants"]:
        assert variant["checks"]["critiques"] == 3
        assert set(variant["checks"]["per_rule"]) == {rule.id for rule in RULES}
        assert 0.0 <= variant["checks"]["with_checks"] <= 1.0
    assert "with checks" in html and "balance_score_tilted" in html


@pytest.mark.model
def test_gates_pass_and_fail(registered_one, capsys):
    model, _ = registered_one
    passing = [
        "evaluate",
        "--advisor",
        "ansel",
        "--model",
        str(model),
        "--min-valid",
        "1.0",
        "--max-mae",
        "10",
    ]
    assert main(passing) == 0
    capsys.readouterr()
    failing = ["evaluate", "--advisor", "ansel", "--model", str(model), "--max-mae", "0"]
    assert main(failing) == 1
    assert "gate failed: mean MAE" in capsys.readouterr().err


@pytest.mark.model
def test_unknown_adapter_is_a_clear_error(registered_one, capsys):
    model, _ = registered_one
    assert (
        main(["evaluate", "--advisor", "ansel", "--adapter", "ansel@v9", "--model", str(model)])
        == 2
    )
    assert "no adapter ansel@v9" in capsys.readouterr().err


# --- gates without a model --------------------------------------------------------------


def _adapter_metrics(valid_rate: float, mean_mae: float | None):
    return VariantMetrics(
        "adapter", count=10, valid_rate=valid_rate, stop_rate=1.0, mean_mae=mean_mae
    )


def test_max_mae_alone_requires_every_answer_valid():
    # A low MAE over the few valid answers must not pass an MAE gate by itself.
    half_valid = _adapter_metrics(valid_rate=0.5, mean_mae=0.1)
    failures = gate_failures(half_valid, min_valid=None, max_mae=1.0)
    assert failures == ["valid rate 0.500 < --min-valid 1.0"]
    assert gate_failures(_adapter_metrics(1.0, 0.1), None, 1.0) == []


def test_an_explicit_min_valid_overrides_the_default():
    half_valid = _adapter_metrics(valid_rate=0.5, mean_mae=0.1)
    assert gate_failures(half_valid, min_valid=0.4, max_mae=1.0) == []
    assert effective_min_valid(None, None) is None
    assert effective_min_valid(0.8, 1.0) == 0.8
    assert effective_min_valid(None, 1.0) == 1.0


def test_help_says_max_mae_implies_min_valid(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "1.0 when --max-mae is given" in " ".join(capsys.readouterr().out.split())
