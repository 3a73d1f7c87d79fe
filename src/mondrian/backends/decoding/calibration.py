"""Calibrated scores (after Q-Align): the expectation of a score under the model's own
probabilities at the position where it wrote the score.

Qwen tokenizers split numbers into single digits, so a score is one digit token, or the
two tokens "1" "0" for 10. Every backend records, per generated token, a probe row of
`PROBE_WIDTH` values (`zero_continuation` below computes the last one):
  - columns 0-9: the raw logits of the digit tokens "0".."9";
  - column 10: log P(the next token's text starts with "0"), over the tokens the grammar
    allows at that step (special tokens suppressed), from the raw logits.
At the score position we take the softmax over the ten digit logits. The mass on "1" is
shared between 1 and 10 by column 10 at the step after the "1": the whole distribution the
grammar allows there is either a "0" (the score becomes 10) or something that ends the
number — ",", or `,"` which Qwen's pre-tokenizer makes one token, and the grammar and
training targets use. Observed only when the model did write "1"; when it wrote another
digit, that mass counts as 1 (documented bias: it can only pull a 10 down, never up).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mondrian.schema import DIMENSIONS

if TYPE_CHECKING:
    import torch  # imported where used: the vllm backend calibrates without torch

_DIGITS = 10
_ZERO_NEXT = 10  # probe column: log P(next token starts with "0" | grammar)
PROBE_WIDTH = 11


def zero_continuation(masked: torch.Tensor, zero_ids: torch.Tensor) -> torch.Tensor:
    """log P(a token in `zero_ids` | the allowed ones), per row of `masked` logits.

    `masked` holds -inf where the grammar (or the special-token suppression) forbids a token.
    A row that allows nothing gives -inf, not NaN. No host sync and fixed shapes: the fast
    path captures this inside a CUDA graph."""
    import torch

    total = torch.logsumexp(masked, dim=-1)
    zero = torch.logsumexp(masked.index_select(-1, zero_ids), dim=-1)
    value = zero - total
    return torch.where(torch.isfinite(total), value, torch.full_like(value, float("-inf")))


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
    """P(score = 0..10) from the probe rows (steps x PROBE_WIDTH) at `index`."""
    import torch

    digits = torch.softmax(logits[index, :_DIGITS].double(), dim=-1)
    p_ten_given_one = 0.0
    if written_digit == "1" and index + 1 < logits.shape[0]:
        p_ten_given_one = float(torch.exp(logits[index + 1, _ZERO_NEXT].double()).clamp(0, 1))
    return split_ten([float(p) for p in digits], p_ten_given_one)


def split_ten(digits: Sequence[float], p_ten_given_one: float) -> list[float]:
    """The 1-vs-10 rule: P(digit 0..9) at the score position becomes P(score 0..10), the
    mass on "1" shared with 10 by P("0" next | "1" written) (0 when another digit was
    written). Plain floats: the vllm backend, which reads logprobs, shares it."""
    probs = [*digits, 0.0]
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
