"""From generated token ids to a `Generation`: the same reading for every backend."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch

from mondrian.backends.decoding.calibration import expectation, score_distributions
from mondrian.backends.protocol import Generation
from mondrian.parsing import CritiqueParseError, parse_critique
from mondrian.schema import Critique


def with_expected(critique: Critique, expected: dict[str, float]) -> Critique:
    dims = critique.dimensions.model_copy(
        update={
            key: dim.model_copy(update={"expected_score": expected[key]})
            for key, dim in critique.dimensions.items()
            if key in expected
        }
    )
    return critique.model_copy(update={"dimensions": dims})


def read_answer(
    tokenizer: Any,
    tokens: Sequence[int],
    stop_token_ids: Collection[int],
    score_logits: torch.Tensor,
    *,
    prompt_tokens: int,
    elapsed: float,
    adapter: str | None,
) -> Generation:
    """Cut at the first end-of-turn token, parse the critique, calibrate its scores."""
    stop_at = next((i for i, t in enumerate(tokens) if t in stop_token_ids), None)
    stopped = stop_at is not None
    answer = list(tokens[:stop_at] if stopped else tokens)
    text = tokenizer.decode(answer, skip_special_tokens=True)
    critique: Critique | None = None
    error: str | None = None
    try:
        critique = parse_critique(text)
    except CritiqueParseError as exc:
        error = exc.message
    pieces = [tokenizer.decode([t]) for t in answer]
    distributions = score_distributions("".join(pieces), pieces, score_logits)
    expected = {key: expectation(dist) for key, dist in distributions.items()}
    if critique is not None and expected:
        critique = with_expected(critique, expected)
    new_tokens = len(answer) + (1 if stopped else 0)
    return Generation(
        text=text,
        critique=critique,
        error=error,
        expected_scores=expected,
        score_distributions=distributions,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        stopped=stopped,
        timings={
            "generate_s": round(elapsed, 4),
            "tokens_per_s": round(new_tokens / elapsed, 2) if elapsed > 0 else 0.0,
        },
        adapter=adapter,
    )
