"""A streamed chat completion read into a `Generation`, the way every backend answers.

The critique is the server's text, read by backends/decoding/decoder.py's `read_critique`
(JSON, then `Critique` validation): an answer that does not read is an error carrying
the server's text, never repaired. Calibration follows backends/decoding/calibration.py
with the probabilities vLLM returns (`logprobs`, `top_logprobs`) instead of the logits:

- at a score position, P(digit 0..9) is the softmax of the ten digits' logprobs (a
  logprob is a logit less one constant per position, so the softmax is the same);
- the 1-vs-10 rule's P("0" next | "1" written) is the mass of the next position's top
  tokens whose text starts with "0". vLLM applies the grammar's mask before it computes
  logprobs, so that position's distribution is over what the grammar allows, as in the
  other backends' probe column.

A dimension whose ten digits are not all among the top logprobs gets no expected score:
the `Generation` says so in `uncalibrated` (dimension -> why), the critique in that
dimension's `expected_score_unavailable` (the result users get), and nothing is invented.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mondrian.backends.decoding.calibration import (
    expectation,
    score_char_offsets,
    split_ten,
    token_at_offsets,
)
from mondrian.backends.decoding.decoder import CritiqueError, read_critique, with_expected
from mondrian.backends.protocol import Generation, TokenCallback
from mondrian.schema import Critique

DIGITS = tuple(str(d) for d in range(10))


@dataclass
class Position:
    """One generated token as vLLM reports it: its text and the top alternatives."""

    token: str
    top: dict[str, float]  # token text -> logprob; the highest kept for repeated texts


@dataclass
class Streamed:
    """What a streamed completion has sent so far."""

    text: str = ""
    positions: list[Position] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, chunk: dict[str, Any]) -> int:
        """Take one chunk; returns how many tokens it brought."""
        usage = chunk.get("usage")
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
        brought = 0
        for choice in chunk.get("choices") or []:
            self.text += (choice.get("delta") or {}).get("content") or ""
            logprobs = choice.get("logprobs") or {}
            for entry in logprobs.get("content") or []:
                self.positions.append(_position(entry))
                brought += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return brought


def _position(entry: dict[str, Any]) -> Position:
    top: dict[str, float] = {}
    for alt in entry.get("top_logprobs") or []:
        token, logprob = alt["token"], float(alt["logprob"])
        if token not in top or logprob > top[token]:
            top[token] = logprob
    return Position(token=entry["token"], top=top)


def read_stream(chunks: Iterable[dict[str, Any]], on_token: TokenCallback | None) -> Streamed:
    """Gather a completion's chunks, reporting the token count after each."""
    streamed = Streamed()
    for chunk in chunks:
        if streamed.add(chunk) and on_token is not None:
            on_token(0, len(streamed.positions))
    return streamed


# --- calibration -----------------------------------------------------------------------------


def digit_distribution(position: Position) -> list[float] | None:
    """P(digit 0..9) at a score position, or None when a digit is not among the top."""
    logprobs = [position.top.get(d) for d in DIGITS]
    if any(lp is None for lp in logprobs):
        return None
    top = max(logprobs)  # type: ignore[type-var]
    weights = [math.exp(lp - top) for lp in logprobs]  # type: ignore[operator]
    total = sum(weights)
    return [w / total for w in weights]


def zero_next(position: Position) -> float:
    """P(the token's text starts with "0"), from the top logprobs at `position`."""
    mass = sum(math.exp(lp) for token, lp in position.top.items() if token.startswith("0"))
    return min(1.0, mass)


def calibrate(
    positions: Sequence[Position],
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """(P(score 0..10) per dimension, why a located dimension has none)."""
    pieces = [p.token for p in positions]
    text = "".join(pieces)
    offsets = score_char_offsets(text)
    indices = token_at_offsets(pieces, offsets)
    distributions: dict[str, list[float]] = {}
    missing: dict[str, str] = {}
    for key, index in indices.items():
        digits = digit_distribution(positions[index])
        if digits is None:
            absent = [d for d in DIGITS if d not in positions[index].top]
            missing[key] = (
                f"digit(s) {', '.join(absent)} not among the server's "
                f"{len(positions[index].top)} top logprobs at the score"
            )
            continue
        written = text[offsets[key]]
        after = positions[index + 1] if index + 1 < len(positions) else None
        p_ten = zero_next(after) if written == "1" and after is not None else 0.0
        distributions[key] = split_ten(digits, p_ten)
    return distributions, missing


def with_unavailable(critique: Critique, why: dict[str, str]) -> Critique:
    """The critique with each uncalibrated dimension's reason in its
    `expected_score_unavailable` (schema.py), so the result says it, not only the log."""
    if not why:
        return critique
    dims = critique.dimensions.model_copy(
        update={
            key: dim.model_copy(update={"expected_score_unavailable": why[key]})
            for key, dim in critique.dimensions.items()
            if key in why
        }
    )
    return critique.model_copy(update={"dimensions": dims})


def to_generation(
    streamed: Streamed, *, adapter: str | None, elapsed: float, limit: int
) -> Generation:
    """The `Generation` of a finished stream (`limit`: the request's token limit)."""
    critique: Critique | None = None
    error: str | None = None
    stopped = streamed.finish_reason == "stop"
    try:
        critique = read_critique(streamed.text)
    except CritiqueError as exc:
        cut = "" if stopped else f"the answer was cut off at its limit of {limit} tokens; "
        shown = streamed.text if len(streamed.text) <= 300 else streamed.text[:300] + "..."
        error = f"{cut}{exc} (the server's text: {shown!r})"
    distributions, missing = calibrate(streamed.positions)
    expected = {key: expectation(dist) for key, dist in distributions.items()}
    if critique is not None:
        if expected:
            critique = with_expected(critique, expected)
        for key, _ in critique.dimensions.items():  # say why a score has none
            if key not in expected and key not in missing:
                missing[key] = "its score token was not found among the returned tokens"
        critique = with_unavailable(critique, missing)
    new_tokens = streamed.completion_tokens or len(streamed.positions)
    return Generation(
        text=streamed.text,
        critique=critique,
        error=error,
        expected_scores=expected,
        score_distributions=distributions,
        uncalibrated=missing,
        prompt_tokens=streamed.prompt_tokens,
        new_tokens=new_tokens,
        stopped=stopped,
        timings={
            "generate_s": round(elapsed, 4),
            "tokens_per_s": round(new_tokens / elapsed, 2) if elapsed > 0 else 0.0,
        },
        adapter=adapter,
        engine="vllm",
    )
