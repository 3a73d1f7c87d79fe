"""Calibrated scores (after Q-Align): the expectation of a score under the model's own
probabilities at the position where it wrote the score.

Qwen tokenizers split numbers into single digits, so a score is one digit token, or the
two tokens "1" "0" for 10. At the score position we take the softmax over the ten digit
logits. The mass on "1" is shared between 1 and 10 by the next step's probabilities of
"0" against "," — observed only when the model did write "1"; when it wrote another
digit, that mass counts as 1 (documented bias: it can only pull a 10 down, never up).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from mondrian.schema import DIMENSIONS

_DIGITS = 10
_COMMA = 10  # index of ',' in grammar.SCORE_TOKENS


def score_char_offsets(text: str) -> dict[str, int]:
    """Character offset of each dimension's score digit in a critique's JSON text."""
    offsets: dict[str, int] = {}
    for key in DIMENSIONS:
        match = re.search(rf'"{key}"\s*:\s*\{{\s*"score"\s*:\s*(\d)', text)
        if match:
            offsets[key] = match.start(1)
    return offsets


def token_at_offsets(token_texts: Sequence[str], offsets: dict[str, int]) -> dict[str, int]:
    """Index of the token that starts at each character offset (skipped if none does)."""
    starts: dict[int, int] = {}
    position = 0
    for index, piece in enumerate(token_texts):
        starts.setdefault(position, index)
        position += len(piece)
    return {key: starts[off] for key, off in offsets.items() if off in starts}


def score_distribution(logits: torch.Tensor, index: int, written_digit: str) -> list[float]:
    """P(score = 0..10) from the score-token logits (steps x 11) at `index`."""
    digits = torch.softmax(logits[index, :_DIGITS].double(), dim=-1)
    p_ten_given_one = 0.0
    if written_digit == "1" and index + 1 < logits.shape[0]:
        pair = torch.softmax(logits[index + 1, [0, _COMMA]].double(), dim=-1)
        p_ten_given_one = float(pair[0])
    probs = [float(p) for p in digits] + [0.0]
    probs[10] = probs[1] * p_ten_given_one
    probs[1] -= probs[10]
    return probs


def expectation(distribution: Sequence[float]) -> float:
    return min(10.0, max(0.0, round(sum(i * p for i, p in enumerate(distribution)), 4)))


def score_distributions(
    text: str, token_texts: Sequence[str], score_logits: torch.Tensor
) -> dict[str, list[float]]:
    """P(score = 0..10) of every dimension whose score token can be located."""
    offsets = score_char_offsets(text)
    indices = token_at_offsets(token_texts, offsets)
    return {
        key: score_distribution(score_logits, index, text[offsets[key]])
        for key, index in indices.items()
        if index < score_logits.shape[0]
    }
