"""Reading an answer: the grammar's JSON reads as a critique with nothing repaired, text that
is not one gives a one-line error that says why, and `read_answer` cuts at the stop token,
says when the token limit cut the JSON off, and calibrates the scores it reads."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mondrian.backends.decoding.calibration import PROBE_WIDTH
from mondrian.backends.decoding.decoder import (
    MAX_PROBLEMS_SHOWN,
    CritiqueError,
    read_answer,
    read_critique,
)
from mondrian.schema import DIMENSIONS, Critique

# Distinct scores, 10 and 0 included.
SCORES = dict(zip(DIMENSIONS, (10, 3, 7, 0, 5, 8, 1, 6), strict=True))


def critique_dict() -> dict:
    return {
        "image_description": "A lone pine on a granite ridge under a darkening sky.",
        "dimensions": {
            key: {
                "score": SCORES[key],
                "comment": f'The {key.replace("_", " ")} holds the eye; "quoted" {{braces}}.',
                "recommendation": f"Work on the {key.replace('_', ' ')} at dawn.",
            }
            for key in DIMENSIONS
        },
        "strengths": ["Tonal separation between rock and sky."],
        "improvements": ["Give the tree more room at the top of the frame."],
    }


# What the grammar makes a model write: compact JSON, the schema's keys in order.
GOOD = json.dumps(critique_dict(), separators=(",", ":"))


def error_of(text: str) -> str:
    with pytest.raises(CritiqueError) as caught:
        read_critique(text)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


# --- the strict reader --------------------------------------------------------------------


@pytest.mark.parametrize("text", [GOOD, json.dumps(critique_dict(), indent=2), f" {GOOD}\n"])
def test_the_grammars_json_reads_as_the_critique(text):
    critique = read_critique(text)
    assert critique.model_dump(exclude_none=True) == critique_dict()
    assert critique.dimensions.scores() == SCORES


def _score(written: str) -> str:
    """The critique with the composition score written as `written`."""
    return GOOD.replace('"score":10', f'"score":{written}', 1)


def _with(**fields) -> str:
    return json.dumps({**critique_dict(), **fields})


def _without_dimensions(*keys: str) -> str:
    data = critique_dict()
    for key in keys:
        del data["dimensions"][key]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the answer is empty"),
        ("  \n ", "the answer is empty"),
        # What an unconstrained model writes: prose, a fence, a cut-off object.
        ("The photo is lovely, 8/10.", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        ("```json\n" + GOOD + "\n```", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (GOOD[:120], "not JSON: Unterminated string starting at: line 1 column 118"),
        (GOOD + " and more", "not JSON: Extra data: line 1 column"),
        ('{"a": [1, 2}', "not JSON: Expecting ',' delimiter: line 1 column 12"),
        ("[" * 100_000, "not JSON: RecursionError"),
        (_score("1" + "0" * 5000), "not JSON: ValueError: Exceeds the limit"),
        # JSON, not a critique: the field and what is wrong with it.
        ("[1, 2, 3]", "critique: Input should be a valid dictionary or instance of Critique"),
        (_score("11"), "dimensions.composition.score: Input should be less than or equal to 10"),
        (_score("-1"), "dimensions.composition.score: Input should be greater than or equal to 0"),
        (_score("7.5"), "dimensions.composition.score: Input should be a valid integer"),
        (_without_dimensions("lighting"), "dimensions.lighting: Field required"),
        (GOOD.replace('"image_description"', '"caption"'), "image_description: Field required"),
        (GOOD.replace('"image_description"', '"caption"'), "caption: Extra inputs are not"),
        (_with(strengths=["ok", 5]), "strengths[1]: Input should be a valid string"),
        (_with(**{"a\nb": 1}), "'a\\nb': Extra inputs are not permitted"),
        (_with(**{"k" * 99: 1}), f"'{'k' * 40}': Extra inputs are not permitted"),
        (_with(strengths=["x"] * 6), "strengths: List should have at most 5 items"),
        (_with(strengths=["  "]), "strengths[0]: String should have at least 1 character"),
        (_with(image_description="a\u0007b"), "image_description: String should match pattern"),
    ],
)
def test_what_is_not_a_critique_says_why(text, expected):
    assert expected in error_of(text)


def test_every_problem_is_named_up_to_a_cap():
    data = critique_dict()
    del data["image_description"]
    data["dimensions"]["lighting"]["score"] = 12
    assert error_of(json.dumps(data)) == (
        "image_description: Field required; "
        "dimensions.lighting.score: Input should be less than or equal to 10"
    )
    many = json.dumps({f"k{i}": i for i in range(20)})
    message = error_of(many)
    assert message.count("; ") == MAX_PROBLEMS_SHOWN
    assert message.endswith(f"and {20 + 2 - MAX_PROBLEMS_SHOWN} more")  # + 2 missing fields


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys from the schema's and any text: made-up keys reach the messages that name them.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([*DIMENSIONS, "image_description", "dimensions", "score"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@PROPERTY
@given(st.one_of(st.text(max_size=300), json_values.map(json.dumps)))
def test_only_a_critique_or_a_critique_error_comes_out(text):
    try:
        result = read_critique(text)
    except CritiqueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(result, Critique)


# --- read_answer --------------------------------------------------------------------------

STOP = 0


class CharTokenizer:
    """One token per character (its code point); STOP is the end-of-turn token."""

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == STOP))


def _read(text: str, *, stop: bool) -> tuple[list[int], object]:
    tokens = [ord(c) for c in text] + ([STOP, ord("x")] if stop else [])
    logits = torch.zeros(len(tokens), PROBE_WIDTH)
    generation = read_answer(
        CharTokenizer(), tokens, {STOP}, logits, prompt_tokens=7, elapsed=0.5, adapter=None
    )
    return tokens, generation


def test_an_answer_is_cut_at_its_stop_token_and_calibrated():
    _, generation = _read(GOOD, stop=True)
    assert generation.text == GOOD and generation.stopped and generation.error is None
    assert generation.new_tokens == len(GOOD) + 1  # the stop token counts, what follows not
    critique = generation.critique
    assert critique is not None and critique.dimensions.scores() == SCORES
    # Flat probe logits: every digit equally likely, so each expectation is the same.
    assert set(generation.expected_scores) == set(DIMENSIONS)
    for key, dim in critique.dimensions.items():
        assert dim.expected_score == generation.expected_scores[key]


def test_an_answer_cut_off_by_its_limit_says_so():
    tokens, generation = _read(GOOD[:200], stop=False)
    assert generation.critique is None and not generation.stopped
    assert generation.new_tokens == len(tokens) == 200
    assert generation.error.startswith("the answer was cut off at its limit of 200 tokens; ")
    assert "not JSON: Unterminated string" in generation.error


def test_a_stopped_answer_that_is_no_critique_gives_the_readers_error():
    _, generation = _read("Nice photo!", stop=True)
    assert generation.critique is None
    assert generation.error == "not JSON: Expecting value: line 1 column 1 (char 0)"
