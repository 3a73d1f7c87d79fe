"""The checks' rules: each fires at its threshold and stays silent just short of it, below
its score, and when its facts were not measured; checks never touch the scores."""

from __future__ import annotations

import pytest

from mondrian.facts.checks import RULES, Condition, Rule, check_rate, run_checks
from mondrian.schema import Critique, Fact, example_critique

# (rule id, dimension, the facts that fire it, the same facts just short of firing)
CASES: list[tuple[str, str, dict[str, object], dict[str, object]]] = [
    ("sharp_score_blurred_photo", "focus_sharpness", {"blur": 0.80}, {"blur": 0.79}),
    (
        "sharp_score_soft_subject",
        "focus_sharpness",
        {"subject_sharpness": 50.0},
        {"subject_sharpness": 50.5},
    ),
    (
        "lighting_score_highlights_clipped",
        "lighting",
        {"highlights_clipped": 0.05},
        {"highlights_clipped": 0.049},
    ),
    (
        "lighting_score_shadows_clipped",
        "lighting",
        {"shadows_clipped": 0.10},
        {"shadows_clipped": 0.099},
    ),
    ("balance_score_tilted", "visual_balance", {"tilt": -3.0}, {"tilt": 2.9}),
    (
        "harmony_score_poor_fit",
        "color_harmony",
        {"monochrome": "no", "harmony_fit": 0.6, "harmony_template": "V"},
        {"monochrome": "no", "harmony_fit": 0.61, "harmony_template": "V"},
    ),
    (
        "composition_score_subject_off_anchors",
        "composition",
        {"subject_thirds_distance": 0.12, "subject_centre_distance": 0.2},
        {"subject_thirds_distance": 0.119, "subject_centre_distance": 0.2},
    ),
]


def critique(**scores: int) -> Critique:
    data = example_critique().model_dump()
    for dim in data["dimensions"].values():
        dim["score"] = 5
    for key, score in scores.items():
        data["dimensions"][key]["score"] = score
    return Critique.model_validate(data)


def facts(values: dict[str, object]) -> list[Fact]:
    return [Fact(name=k, value=v, unit="", meaning=k) for k, v in values.items()]  # type: ignore[arg-type]


def rule(rule_id: str) -> Rule:
    return next(r for r in RULES if r.id == rule_id)


def test_every_rule_is_covered_and_ids_are_unique() -> None:
    assert sorted(r.id for r in RULES) == sorted(case[0] for case in CASES)


@pytest.mark.parametrize(("rule_id", "dimension", "firing", "short"), CASES)
def test_rule_fires_at_its_threshold(
    rule_id: str, dimension: str, firing: dict[str, object], short: dict[str, object]
) -> None:
    strong = critique(**{dimension: rule(rule_id).min_score})
    (check,) = run_checks(strong, facts(firing))
    assert check.rule == rule_id
    assert check.dimension == dimension
    assert set(check.facts) <= set(firing)
    assert f"{rule(rule_id).min_score}/10" in check.message
    assert "{" not in check.message
    assert run_checks(strong, facts(short)) == []


@pytest.mark.parametrize(("rule_id", "dimension", "firing", "short"), CASES)
def test_rule_silent_below_its_score(
    rule_id: str, dimension: str, firing: dict[str, object], short: dict[str, object]
) -> None:
    modest = critique(**{dimension: rule(rule_id).min_score - 1})
    assert run_checks(modest, facts(firing)) == []


@pytest.mark.parametrize(("rule_id", "dimension", "firing", "short"), CASES)
def test_rule_silent_when_a_fact_is_missing(
    rule_id: str, dimension: str, firing: dict[str, object], short: dict[str, object]
) -> None:
    strong = critique(**{dimension: 10})
    for name in rule(rule_id).facts:
        partial = {k: v for k, v in firing.items() if k != name}
        assert run_checks(strong, facts(partial)) == []


def test_monochrome_photo_has_no_harmony_check() -> None:
    mono = {"monochrome": "yes", "harmony_fit": 0.0, "harmony_template": "none"}
    assert run_checks(critique(color_harmony=10), facts(mono)) == []


def test_a_value_of_the_wrong_kind_is_not_compared() -> None:
    assert Condition("tilt", ">=", 3.0).holds({t.name: t for t in facts({"tilt": "n/a"})}) is None
    assert run_checks(critique(visual_balance=10), facts({"tilt": [5.0, 1.0]})) == []


def test_checks_leave_scores_alone_and_keep_rule_order() -> None:
    strong = critique(lighting=9, visual_balance=9, focus_sharpness=9)
    before = strong.model_dump()
    found = run_checks(
        strong, facts({"tilt": 6.0, "highlights_clipped": 0.3, "shadows_clipped": 0.4, "blur": 0.9})
    )
    assert [c.rule for c in found] == [
        "sharp_score_blurred_photo",
        "lighting_score_highlights_clipped",
        "lighting_score_shadows_clipped",
        "balance_score_tilted",
    ]
    assert strong.model_dump() == before


def test_check_rate_counts_critiques_and_rules() -> None:
    tilt = run_checks(critique(visual_balance=9), facts({"tilt": 4.0}))
    both = run_checks(
        critique(visual_balance=9, lighting=9), facts({"tilt": 4.0, "highlights_clipped": 0.5})
    )
    rate = check_rate([tilt, both, [], []])
    assert rate["critiques"] == 4
    assert rate["with_checks"] == 0.5
    per_rule = rate["per_rule"]
    assert per_rule["balance_score_tilted"] == 0.5
    assert per_rule["lighting_score_highlights_clipped"] == 0.25
    assert per_rule["sharp_score_blurred_photo"] == 0.0
    assert check_rate([]) == {
        "critiques": 0,
        "with_checks": 0.0,
        "per_rule": dict.fromkeys((r.id for r in RULES), 0.0),
    }


def test_on_a_real_photo_and_its_blurred_copy() -> None:
    import dataclasses
    from pathlib import Path

    from PIL import ImageFilter

    from mondrian.facts import measure
    from mondrian.images import read_image_file

    photo = read_image_file(Path(__file__).parents[1] / "assets" / "photos" / "chelsea.jpg")
    blurred = dataclasses.replace(photo, image=photo.image.filter(ImageFilter.GaussianBlur(4)))
    sharp_claim = critique(focus_sharpness=9)
    assert [c.rule for c in run_checks(sharp_claim, measure(photo))] == []
    found = {c.rule for c in run_checks(sharp_claim, measure(blurred))}
    assert found == {"sharp_score_blurred_photo", "sharp_score_soft_subject"}
    assert run_checks(critique(focus_sharpness=7), measure(blurred)) == []
