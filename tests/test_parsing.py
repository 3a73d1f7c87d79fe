"""The tolerant parser: every recovery path, truncation at every cut point, the wording of
its errors, and property tests that nothing but a Critique or CritiqueParseError comes out."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mondrian.errors import InvalidInput
from mondrian.parsing import MAX_INPUT_CHARS, CritiqueParseError, parse_critique
from mondrian.schema import DIMENSIONS, Critique

# Distinct scores, 10 and 0 included: a cut that turns "10" into "1" must not go unnoticed.
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


GOOD = json.dumps(critique_dict(), indent=2)
GOOD_COMPACT = json.dumps(critique_dict(), separators=(",", ":"))


def outcome(text) -> Critique | CritiqueParseError:
    """The parser's result; any exception other than CritiqueParseError fails the test."""
    try:
        result = parse_critique(text)
    except CritiqueParseError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert str(exc)
        return exc
    assert isinstance(result, Critique)
    # What comes out is valid by the schema and carries nothing the model computed.
    assert Critique.model_validate(result.model_dump()) == result
    assert result.overall_score is None and result.overall_grade is None
    assert all(dim.expected_score is None for _, dim in result.dimensions.items())
    return result


def error_of(text) -> CritiqueParseError:
    result = outcome(text)
    assert isinstance(result, CritiqueParseError), f"expected an error, parsed {result!r}"
    return result


def assert_is_good(result) -> None:
    assert isinstance(result, Critique), f"expected a critique, got: {result}"
    assert result.model_dump(exclude_none=True) == critique_dict()


# --- recovery paths ----------------------------------------------------------------------


def test_plain_json():
    assert_is_good(outcome(GOOD))
    assert_is_good(outcome(GOOD_COMPACT))
    assert_is_good(outcome("\ufeff  \n" + GOOD + "\n\n"))


@pytest.mark.parametrize(
    "text",
    [
        "Here is my critique:\n```json\n" + GOOD + "\n```\nI hope it helps!",
        "```\n" + GOOD + "\n```",
        "```JSON " + GOOD_COMPACT + "```",
        # A model that ran out of tokens before closing its fence.
        "Sure.\n```json\n" + GOOD + "\n",
        # A first fence holding something else.
        "```python\nprint('{x}')\n```\nand the result:\n```json\n" + GOOD + "\n```",
    ],
)
def test_code_fences(text):
    assert_is_good(outcome(text))


@pytest.mark.parametrize(
    "text",
    [
        "Critique follows. " + GOOD + " That is all.",
        'Braces in prose {like these} and {"these": } come first.\n' + GOOD,
        'A stray quote " and a brace { before it: ' + GOOD + "\n}} trailing ]] junk",
        GOOD + "\n" + GOOD,  # two objects: the first is taken
    ],
)
def test_first_balanced_object(text):
    assert_is_good(outcome(text))


def test_scanner_respects_strings_and_escapes():
    data = critique_dict()
    data["dimensions"]["lighting"]["comment"] = 'A "}" and a "{" and a backslash \\ and \\"'
    text = "Prose first. " + json.dumps(data) + " }"
    result = outcome(text)
    assert isinstance(result, Critique)
    assert result.dimensions.lighting.comment == data["dimensions"]["lighting"]["comment"]


@pytest.mark.parametrize("prefix", ["", "Result: "])
def test_trailing_commas_are_dropped(prefix):
    text = GOOD_COMPACT[:-1] + ",}"
    text = text.replace('."]', '.",]').replace('dawn."}', 'dawn.",}')
    assert text.count(",]") == 2 and text.count(",}") == len(DIMENSIONS) + 1
    assert_is_good(outcome(prefix + text))


def test_wrapped_in_one_key_object():
    assert_is_good(outcome(json.dumps({"critique": critique_dict()})))


def test_computed_fields_are_dropped_not_trusted():
    data = critique_dict()
    data["overall_score"] = 99  # out of range: it must not matter
    data["overall_grade"] = "A+"
    data["dimensions"]["composition"]["expected_score"] = -3.5
    result = outcome(json.dumps(data))
    assert isinstance(result, Critique)
    assert result.overall_score is None
    assert result.dimensions.composition.expected_score is None


@pytest.mark.parametrize(
    ("written", "score"), [("7", 7), ("7.0", 7), ('"7"', 7), ('" 10 "', 10), ('"6/10"', 6)]
)
def test_scores_are_normalised(written, score):
    text = GOOD_COMPACT.replace('"score":10', f'"score":{written}', 1)
    result = outcome(text)
    assert isinstance(result, Critique)
    assert result.dimensions.composition.score == score


def test_keys_text_and_lists_are_normalised():
    data = critique_dict()
    dims = data["dimensions"]
    dims["Focus Sharpness"] = dims.pop("focus_sharpness")
    dims["color-harmony"] = dims.pop("color_harmony")
    dims["lighting"] = {"Score": 3, " COMMENT ": "Soft\nlight.", "recommendation": "Wait."}
    data["Image_Description"] = data.pop("image_description")
    data["strengths"] = "One bare string."
    data["improvements"] = None
    result = outcome(json.dumps(data))
    assert isinstance(result, Critique)
    assert result.dimensions.focus_sharpness.score == SCORES["focus_sharpness"]
    assert result.dimensions.lighting.comment == "Soft light."
    assert result.strengths == ["One bare string."]
    assert result.improvements == []


def test_raw_newlines_inside_strings():
    text = GOOD.replace("darkening sky.", "darkening\nsky.")
    result = outcome(text)
    assert isinstance(result, Critique)
    assert result.image_description.endswith("darkening sky.")


def test_bytes_are_decoded():
    assert_is_good(outcome(GOOD.encode()))


# --- truncation --------------------------------------------------------------------------


def _end_of_dimensions(text: str) -> int:
    """Index just after the '}' that closes "dimensions"."""
    return text.index('"strengths"')


@pytest.mark.parametrize("full", [GOOD, GOOD_COMPACT], ids=["indented", "compact"])
def test_truncated_at_every_cut_point(full):
    last_rec = full.index('"recommendation"', full.index('"emotional_impact"'))
    value_start = full.index('"', last_rec + len('"recommendation"') + 1) + 1
    dims_open = full.index("{", full.index('"dimensions"'))
    recovered = 0
    for cut in range(len(full)):
        prefix = full[:cut]
        result = outcome(prefix)
        if cut <= value_start:
            # The last dimension is incomplete: nothing valid can come out of this.
            assert isinstance(result, CritiqueParseError), cut
            message = str(result)
            if cut > 0 and prefix.strip():
                assert message.startswith("output was cut off"), (cut, message)
            if cut > dims_open:
                for key in DIMENSIONS:
                    if f'"{key}"' not in prefix:
                        assert key in message, (cut, key, message)
        elif isinstance(result, Critique):
            recovered += 1
            # A cut never changes a score; at most it shortens the text it cut.
            assert result.dimensions.scores() == SCORES, cut
            if cut >= _end_of_dimensions(full):
                got = result.model_dump(exclude_none=True)
                assert got["dimensions"] == critique_dict()["dimensions"], cut
        else:
            # Inside the last recommendation only blank text may fail.
            assert cut < _end_of_dimensions(full) and not full[value_start:cut].strip(), cut
    # Everything from inside the last recommendation on recovers.
    assert recovered >= len(full) - value_start - 2


def test_truncation_names_what_is_missing():
    cut = GOOD.index('"focus_sharpness"') + 5
    error = error_of(GOOD[:cut])
    assert error.problems[0] == "output was cut off before the JSON object ended"
    assert (
        "missing dimensions: focus_sharpness, color_harmony, subject_isolation, "
        "depth_perspective, visual_balance, emotional_impact" in error.problems
    )


def test_truncated_number_is_dropped_not_guessed():
    cut = GOOD.index('"score": 10') + len('"score": 1')
    error = error_of(GOOD[:cut])
    assert "dimensions.composition: missing score, comment, recommendation" in error.problems


def test_truncated_inside_an_escape():
    data = critique_dict()
    data["strengths"] = ['Sharp "edges" \u00e9 here']
    text = json.dumps(data)  # ensure_ascii: the é is written as \u00e9
    for tail in ("\\", "\\u", "\\u00", "\\u00e"):
        cut = text.index("\\u00e9") + len(tail)
        assert text[:cut].endswith(tail)
        result = outcome(text[:cut])
        assert isinstance(result, Critique), (tail, result)
        assert result.strengths == ['Sharp "edges"']
    cut = text.index('\\"edges') + 1  # cut between the backslash and the quote it escapes
    result = outcome(text[:cut])
    assert isinstance(result, Critique)
    assert result.strengths == ["Sharp"]


# --- errors ------------------------------------------------------------------------------


def test_error_type_and_problems():
    error = error_of("The photo is lovely, 8/10.")
    assert isinstance(error, InvalidInput)
    assert error.problems == ["no JSON object found"]
    assert str(error) == "no JSON object found"
    assert error.code == "invalid_critique"
    assert error.http_status == 422


def _without(*keys: str) -> str:
    data = critique_dict()
    for key in keys:
        del data["dimensions"][key]
    return json.dumps(data)


def _score(written: str) -> str:
    """The critique with the composition score written as `written`."""
    return GOOD_COMPACT.replace('"score":10', f'"score":{written}', 1)


def _with(**fields) -> str:
    return json.dumps({**critique_dict(), **fields})


SCORE = "dimensions.composition.score: "
RANGE = SCORE + "must be between 0 and 10"
INTEGER = SCORE + "must be an integer"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_without("lighting", "focus_sharpness"), "missing dimensions: lighting, focus_sharpness"),
        (_score("11"), RANGE + ", got 11"),
        (_score("-1"), RANGE + ", got -1"),
        (_score('"12"'), RANGE + ", got '12'"),
        (_score("7.5"), INTEGER + " from 0 to 10, got 7.5"),
        (_score("true"), INTEGER + " from 0 to 10, got true"),
        (_score('"high"'), INTEGER + " from 0 to 10, got 'high'"),
        (_score("null"), INTEGER + " from 0 to 10, got null"),
        (_score("[7]"), INTEGER + " from 0 to 10, got an array"),
        (_score("1" + "0" * 5000), INTEGER + " from 0 to 10, got inf"),
        (_score("NaN"), INTEGER + " from 0 to 10, got nan"),
        (GOOD_COMPACT.replace('"score":10,', ""), "dimensions.composition: missing score"),
        (GOOD_COMPACT.replace('"image_description"', '"caption"'), "missing image_description"),
        (GOOD_COMPACT.replace('"image_description"', '"caption"'), "unexpected key: 'caption'"),
        (
            GOOD_COMPACT.replace('"color_harmony"', '"colour_harmony"'),
            "missing dimensions: color_harmony",
        ),
        (
            GOOD_COMPACT.replace('"color_harmony"', '"colour_harmony"'),
            "unexpected dimensions: 'colour_harmony'",
        ),
        (
            GOOD_COMPACT.replace('"score":3,', '"score":3,"mood":"calm",'),
            "dimensions.lighting: unexpected key: 'mood'",
        ),
        (
            GOOD_COMPACT.replace('"lighting":', '"Lighting":{},"lighting":'),
            "dimensions: duplicate key: 'lighting'",
        ),
        (_with(dimensions=[1, 2]), "dimensions: must be an object, got an array"),
        (_with(strengths=["ok", 5]), "strengths[1]: must be a string"),
        (_with(strengths=["x"] * 6), "strengths: must have at most 5 items"),
        (_with(strengths={"a": "b"}), "strengths: must be a list of strings"),
        (_with(strengths=["  "]), "strengths[0]: must not be empty"),
        (_with(image_description="x" * 401), "image_description: must be at most 400 characters"),
        (
            _with(image_description="a\u0007b"),
            "image_description: must not contain control characters",
        ),
        (
            GOOD_COMPACT.replace("A lone pine", "A lone \\ud800 pine"),
            "image_description: must be valid Unicode text",
        ),
        ("[1, 2, 3]", "expected a JSON object, got an array"),
        ("null", "expected a JSON object, got null"),
        ("   \n ", "empty output"),
        ('{"a": [1, 2}', "no valid JSON object found"),
        (
            '{"image_description": "x" "dimensions": {}}',
            "no valid JSON object found: Expecting ',' delimiter at line 1 column 27",
        ),
    ],
)
def test_error_messages_say_what_is_wrong(text, expected):
    error = error_of(text)
    assert expected in str(error), str(error)
    assert any(expected in problem or problem in expected for problem in error.problems)


def test_reports_every_problem_of_the_best_candidate():
    data = critique_dict()
    del data["image_description"]
    data["dimensions"]["lighting"]["score"] = 12
    del data["dimensions"]["emotional_impact"]
    # Prose with a brace-y non-critique object first: the critique-like one is reported.
    error = error_of('Note: {"confidence": 0.9}\n' + json.dumps(data))
    assert error.problems == [
        "missing image_description",
        "missing dimensions: emotional_impact",
        "dimensions.lighting.score: must be between 0 and 10, got 12",
    ]


def test_non_text_input():
    assert "expected text" in str(error_of(None))
    assert "expected text" in str(error_of(12))


def test_too_long_input_is_refused_quickly():
    text = GOOD + " " * MAX_INPUT_CHARS
    start = time.perf_counter()
    error = error_of(text)
    assert time.perf_counter() - start < 0.1
    assert "too long" in str(error) and str(MAX_INPUT_CHARS) in str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{" * 150_000, "nested more than 64 levels deep"),
        ("[" * 150_000, "no JSON object found"),
        ('{"a":' * 30_000, "nested more than 64 levels deep"),
        ('{"strengths": ' + "[" * 50_000, "nested more than 64 levels deep"),
        (
            GOOD_COMPACT.replace('"strengths":[', '"strengths":[' + "[" * 5000, 1),
            "nested more than 64 levels deep",
        ),
        (GOOD_COMPACT[:-1] + ',"x":' + "[" * 3000 + "]" * 3000 + "}", "nested more than 64"),
        # Shallow enough for json, not for the schema: a plain validation problem.
        (GOOD_COMPACT[:-1] + ',"x":' + "[" * 60 + "]" * 60 + "}", "unexpected key: 'x'"),
    ],
    ids=["braces", "brackets", "keys", "open-list", "in-critique", "balanced", "shallow"],
)
def test_deep_nesting_is_an_error_not_a_crash(text, expected):
    assert expected in str(error_of(text))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "' + '\\"' * 99_000,
        '{"a":[' + "1," * 99_000,
        '{"a":[' + '"",' * 66_000,
        '{"a":[' + "{}," * 66_000,
        '"{' * 99_000,
        "{}" * 99_000,
        "```" * 66_000,
        "{" + " " * 199_000,
        "x" * 199_000 + "{",
    ],
)
def test_huge_inputs_stay_fast(text):
    assert len(text) <= MAX_INPUT_CHARS
    start = time.perf_counter()
    error_of(text)
    assert time.perf_counter() - start < 1.5


# --- properties --------------------------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from([*DIMENSIONS, "image_description", "dimensions", "score", "x"])
            | st.text(max_size=10),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)

# Critique-shaped objects with arbitrary leaves: they reach the validation code paths.
small_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=3), children, max_size=2)
    ),
    max_leaves=4,
)
shaped = st.fixed_dictionaries(
    {
        "image_description": small_json,
        "dimensions": st.dictionaries(
            st.sampled_from(DIMENSIONS),
            st.fixed_dictionaries(
                {},
                optional={
                    "score": st.integers(-2, 12) | st.sampled_from(["7", 7.0, True]) | small_json,
                    "comment": st.text(max_size=20) | small_json,
                    "recommendation": st.text(max_size=20),
                    "expected_score": small_json,
                },
            ),
        ),
    },
    optional={"strengths": small_json, "overall_score": small_json},
)  # fmt: skip


@PROPERTY
@given(st.text(max_size=300))
def test_any_text(text):
    outcome(text)


@PROPERTY
@given(json_values)
def test_any_json_value(value):
    text = json.dumps(value)
    outcome(text)
    outcome("```json\n" + text + "\n```")


@PROPERTY
@given(shaped)
def test_critique_shaped_json(value):
    outcome(json.dumps(value))


@PROPERTY
@given(st.integers(0, len(GOOD)), st.booleans())
def test_cuts_never_change_scores(cut, compact):
    text = (GOOD_COMPACT if compact else GOOD)[:cut]
    result = outcome(text)
    if isinstance(result, Critique):
        assert result.dimensions.scores() == SCORES


@PROPERTY
@given(st.data())
def test_mutations_of_a_valid_critique(data):
    text = data.draw(st.sampled_from([GOOD, GOOD_COMPACT]))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["cut", "insert", "delete", "replace", "nest"]))
        at = data.draw(st.integers(0, len(text)))
        if kind == "cut":
            text = text[:at]
        elif kind == "insert":
            text = text[:at] + data.draw(st.text(max_size=10)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 20)) :]
        elif kind == "replace":
            char = data.draw(st.sampled_from([*'{}[]",:\\ 0a\n', "\x00", "\ud800"]))
            text = text[:at] + char + text[at + 1 :]
        else:
            depth = data.draw(st.integers(1, 3000))
            opener = data.draw(st.sampled_from(["[", "{", '{"a":', '{"critique":']))
            closer = "]" if opener == "[" else "}"
            close = data.draw(st.booleans())
            text = text[:at] + opener * depth + text[at:] + (closer * depth if close else "")
    outcome(text)


@PROPERTY
@given(
    st.text(alphabet=st.characters(blacklist_characters="{`"), max_size=100),
    st.text(max_size=100),
)
def test_prose_around_a_valid_critique(before, after):
    assert_is_good(outcome(before + GOOD + after))
