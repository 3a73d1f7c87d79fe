"""The critique schema: keys, bounds, scoring, grades and the generation schema."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from mondrian.schema import (
    DIMENSIONS,
    GRADE_TABLE,
    MAX_COMMENT_CHARS,
    Critique,
    bounded_text_pattern,
    example_critique,
    generation_schema,
    grade_for,
    longest_answer,
    overall_score,
)


def _critique_dict(**dimension_overrides):
    data = example_critique().model_dump(exclude_none=True)
    for dim in data["dimensions"].values():
        dim.update(dimension_overrides)
    return data


def test_dimensions_are_the_eight_fixed_keys_in_order():
    assert DIMENSIONS == (
        "composition",
        "lighting",
        "focus_sharpness",
        "color_harmony",
        "subject_isolation",
        "depth_perspective",
        "visual_balance",
        "emotional_impact",
    )
    assert list(Critique.model_json_schema()["$defs"]["Dimensions"]["properties"]) == list(
        DIMENSIONS
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["dimensions"].pop("lighting"),
        lambda d: d["dimensions"].update(extra={"score": 1, "comment": "a", "recommendation": "b"}),
        lambda d: d["dimensions"]["lighting"].update(score=11),
        lambda d: d["dimensions"]["lighting"].update(score=-1),
        lambda d: d["dimensions"]["lighting"].update(comment="x" * (MAX_COMMENT_CHARS + 1)),
        lambda d: d["dimensions"]["lighting"].update(comment="bell\x07"),
        lambda d: d["dimensions"]["lighting"].update(comment="   "),
        lambda d: d.update(strengths=["ok"] * 6),
        lambda d: d.update(unexpected=1),
    ],
)
def test_invalid_critiques_are_rejected(mutate):
    data = _critique_dict()
    mutate(data)
    with pytest.raises(ValidationError):
        Critique.model_validate(data)


def test_overall_score_is_the_weighted_mean_and_ignores_the_models_claim():
    data = _critique_dict()
    for i, key in enumerate(DIMENSIONS):
        data["dimensions"][key]["score"] = i + 1  # 1..8
    data["overall_score"] = 10.0  # what a model might claim
    critique = Critique.model_validate(data)
    weights = {key: 0.0 for key in DIMENSIONS} | {"composition": 3.0, "lighting": 1.0}
    scored = critique.scored(weights)
    assert scored.overall_score == pytest.approx((3 * 1 + 1 * 2) / 4)
    assert scored.overall_grade == "F"
    assert critique.scored(None).overall_score == pytest.approx(4.5)


def test_overall_score_rejects_bad_weights():
    scores = dict.fromkeys(DIMENSIONS, 5)
    with pytest.raises(ValueError):
        overall_score(scores, dict.fromkeys(DIMENSIONS, 0.0))
    with pytest.raises(ValueError):
        overall_score({"composition": 5}, None)


def test_grade_table_is_ordered_and_total():
    lows = [low for low, _ in GRADE_TABLE]
    assert lows == sorted(lows, reverse=True) and lows[-1] == 0.0
    assert grade_for(10) == "A+" and grade_for(9.0) == "A+" and grade_for(8.99) == "A"
    assert grade_for(0) == "F"
    assert [grade_for(low) for low, _ in GRADE_TABLE] == [g for _, g in GRADE_TABLE]


def test_generation_schema_drops_computed_fields_and_requires_everything():
    schema = generation_schema()
    assert list(schema["properties"]) == [
        "image_description",
        "dimensions",
        "strengths",
        "improvements",
    ]
    dim = schema["properties"]["dimensions"]["properties"]["lighting"]
    assert list(dim["properties"]) == ["score", "comment", "recommendation"]
    assert dim["required"] == ["score", "comment", "recommendation"]
    assert dim["additionalProperties"] is False
    assert dim["properties"]["score"] == {"type": "integer", "minimum": 0, "maximum": 10}


def test_generation_schema_bounds_only_tighten():
    tight = generation_schema(max_text_chars=20, max_list_items=2)
    assert tight["properties"]["strengths"]["maxItems"] == 2
    loose = generation_schema(max_text_chars=10_000)
    pattern = loose["properties"]["dimensions"]["properties"]["lighting"]["properties"]["comment"][
        "pattern"
    ]
    assert re.fullmatch(pattern[1:-1], "x" * MAX_COMMENT_CHARS)
    assert not re.fullmatch(pattern[1:-1], "x" * (MAX_COMMENT_CHARS + 1))


def test_text_pattern_admits_printable_ascii_only():
    pattern = re.compile(bounded_text_pattern(300))
    assert pattern.match("Light falls from the left; the horizon (sadly) tilts 2 degrees!")
    assert pattern.match("a > b, a | b, {x} [y] ~z")
    # '<' starts every special token's text (`<|vision_pad|>`, `<|im_end|>`, `<tool_call>`).
    bad_texts = ['say "hi"', "back\\slash", "tab\tchar", "new\nline", "caf\u00e9", ""]
    bad_texts += ["<|vision_pad|>", "a <b", "<tool_call>"]
    for bad in bad_texts:
        assert not pattern.match(bad), bad
    long = bounded_text_pattern(1000)
    assert all(int(n) <= 128 for n in re.findall(r"\{(?:\d+,)?(\d+)\}", long))
    for n in (1, 128, 129, 300, 1000):
        exact = re.compile(bounded_text_pattern(n))
        assert exact.fullmatch("x" * n) and not exact.fullmatch("x" * (n + 1)), n


def test_longest_answer_is_valid_and_bounds_every_answer():
    text = longest_answer(max_text_chars=30, max_list_items=2)
    data = json.loads(text)
    critique = Critique.model_validate(data)  # raises if the longest answer were invalid
    assert critique.dimensions.scores() == {k: d["score"] for k, d in data["dimensions"].items()}
    assert len(data["strengths"]) == 2
    assert all(len(d["comment"]) == 30 for d in data["dimensions"].values())
    assert len(longest_answer()) > len(text)


def test_generation_schema_compiles_to_a_grammar():
    xgr = pytest.importorskip("xgrammar")
    grammar = xgr.Grammar.from_json_schema(
        json.dumps(generation_schema()), any_whitespace=False, separators=(",", ":")
    )
    assert "root" in str(grammar)
