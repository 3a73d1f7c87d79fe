"""Calibrated scores from hand-made logits: the arithmetic, without a model."""

from __future__ import annotations

import math

import pytest
import torch

from mondrian.backends.decoding.calibration import (
    expectation,
    score_char_offsets,
    score_distribution,
    score_distributions,
    token_at_offsets,
    zero_continuation,
)

NEG = -1e4


def _logits(*rows: dict[int, float]) -> torch.Tensor:
    out = torch.full((len(rows), 11), NEG)
    for i, row in enumerate(rows):
        for index, value in row.items():
            out[i, index] = value
    return out


def test_certain_digit_gives_that_score():
    dist = score_distribution(_logits({7: 0.0}), 0, "7")
    assert dist[7] == pytest.approx(1.0) and expectation(dist) == pytest.approx(7.0)


def test_uniform_digits_give_the_mean():
    dist = score_distribution(torch.zeros(1, 11), 0, "4")
    assert sum(dist) == pytest.approx(1.0)
    assert expectation(dist) == pytest.approx(4.5)


def test_a_written_one_shares_its_mass_with_ten():
    # P("1") = 1 at the score position; the next step's column 10 says P(a "0" next) = 0.75.
    logits = _logits({1: 0.0}, {10: math.log(0.75)})
    dist = score_distribution(logits, 0, "1")
    assert dist[10] == pytest.approx(0.75) and dist[1] == pytest.approx(0.25)
    assert expectation(dist) == pytest.approx(0.75 * 10 + 0.25 * 1)


# A vocabulary of six tokens, as after a written "1": what the grammar allows is "0" (the
# score becomes 10), "," and ',"' (Qwen's pre-tokenizer makes ',"' one token); "x", "}"
# and a special token are forbidden there.
_VOCAB = ("0", ",", ',"', "x", "}", "<|vision_pad|>")
_ALLOWED = torch.tensor([True, True, True, False, False, False])


def _masked(logits: list[float]) -> torch.Tensor:
    row = torch.tensor([logits])
    return row.masked_fill(~_ALLOWED, float("-inf"))


def test_the_split_counts_every_allowed_continuation_where_comma_quote_carries_the_mass():
    # The model writes `,"` after its "1" (P = 0.9 among the allowed); "0" gets 0.02 and
    # "," 0.08. The forbidden tokens' large logits must not count.
    probs = {"0": 0.02, ",": 0.08, ',"': 0.9}
    logits = [math.log(probs[t]) if t in probs else 50.0 for t in _VOCAB]
    zero = zero_continuation(_masked(logits), torch.tensor([0]))
    assert math.exp(float(zero[0])) == pytest.approx(0.02)
    rows = _logits({1: 0.0}, {10: float(zero[0])})
    assert expectation(score_distribution(rows, 0, "1")) == pytest.approx(1 + 9 * 0.02)
    # The old rule, "0" against "," alone, would have said P(10 | "1") = 0.2: 2.8.
    pair = torch.softmax(torch.tensor([logits[0], logits[1]]), dim=-1)
    assert 1 + 9 * float(pair[0]) == pytest.approx(2.8)


def test_a_step_that_allows_nothing_gives_no_mass_to_ten():
    nothing = torch.full((1, len(_VOCAB)), float("-inf"))
    zero = zero_continuation(nothing, torch.tensor([0]))
    assert zero[0] == float("-inf")
    rows = _logits({1: 0.0}, {10: float(zero[0])})
    assert expectation(score_distribution(rows, 0, "1")) == pytest.approx(1.0)


def test_two_digits_split_evenly():
    dist = score_distribution(_logits({2: 0.0, 8: 0.0}), 0, "2")
    assert expectation(dist) == pytest.approx(5.0)


def test_score_positions_are_found_in_compact_and_spaced_json():
    text = '{"dimensions":{"composition":{"score":7,"comment":"x"},"lighting": {"score": 10}}}'
    offsets = score_char_offsets(text)
    assert text[offsets["composition"]] == "7" and text[offsets["lighting"]] == "1"
    pieces = ['{"', "dimensions", '":{"', "composition", '":{"', "score", '":', "7", ","]
    pieces_text = "".join(pieces)
    index = token_at_offsets(pieces, score_char_offsets(pieces_text))["composition"]
    assert pieces[index] == "7"


def test_distributions_for_a_whole_answer():
    pieces = ['{"composition":{"score":', "9", ',"comment":"a"}}']
    logits = _logits({}, {9: 0.0}, {})
    logits[0] = 0.0
    logits[2] = 0.0
    dists = score_distributions("".join(pieces), pieces, logits)
    assert list(dists) == ["composition"]
    assert expectation(dists["composition"]) == pytest.approx(9.0)
