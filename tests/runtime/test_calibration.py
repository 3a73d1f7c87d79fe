"""Calibrated scores from hand-made logits: the arithmetic, without a model."""

from __future__ import annotations

import math

import pytest
import torch

from mondrian.runtime.calibration import (
    expectation,
    score_char_offsets,
    score_distribution,
    score_distributions,
    token_at_offsets,
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
    # P("1") = 1 at the score position; next step P("0") : P(",") = 3 : 1.
    logits = _logits({1: 0.0}, {0: math.log(3.0), 10: 0.0})
    dist = score_distribution(logits, 0, "1")
    assert dist[10] == pytest.approx(0.75) and dist[1] == pytest.approx(0.25)
    assert expectation(dist) == pytest.approx(0.75 * 10 + 0.25 * 1)


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
