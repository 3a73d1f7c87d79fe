"""From generated token ids to a `Generation`: the same reading for every backend.

Every backend decodes a critique under the critique's JSON-schema grammar
(backends/decoding/grammar.py, docs/generation.md), so its text is the schema's JSON by
construction: reading it is `json.loads` and `Critique.model_validate`, nothing repaired.
Text that does not read is an unconstrained row (`GenerationRequest(constrained=False)`,
which only tests and benchmarks ask for) or an answer cut off by its token limit; either
way the critique is None and `Generation.error` says in one line why.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mondrian.backends.decoding.calibration import expectation, score_distributions
from mondrian.backends.protocol import Generation
from mondrian.schema import Critique

if TYPE_CHECKING:
    import torch

# Schema problems named in one error; a line in a log or a job's error stays readable.
MAX_PROBLEMS_SHOWN = 5


class CritiqueError(ValueError):
    """Text that is not a critique; the message says why in one line."""


def read_critique(text: str) -> Critique:
    """The critique `text` holds as JSON, or `CritiqueError` saying why it holds none."""
    if not text.strip():
        raise CritiqueError("the answer is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CritiqueError(f"not JSON: {exc}") from None  # says where: line, column, char
    except (ValueError, RecursionError) as exc:
        # An unconstrained row can write a 5,000-digit number (ValueError) or a thousand
        # '[' (RecursionError); neither may escape and fail the whole batch.
        raise CritiqueError(f"not JSON: {type(exc).__name__}: {exc}"[:200]) from None
    try:
        return Critique.model_validate(data)
    except ValidationError as exc:
        raise CritiqueError(_problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    shown = [f"{_where(e['loc'])}: {e['msg']}" for e in errors[:MAX_PROBLEMS_SHOWN]]
    if len(errors) > len(shown):
        shown.append(f"and {len(errors) - len(shown)} more")
    return "; ".join(shown)


def _where(loc: tuple[int | str, ...]) -> str:
    """'dimensions.lighting.score', 'strengths[1]'; the whole object is 'critique'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # A key the model made up is quoted, escaped and cut: it must not break a log line.
        name = part if part.isidentifier() and len(part) <= 40 else ascii(part[:40])
        out += f".{name}" if out else name
    return out or "critique"


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
    """Cut at the first end-of-turn token, read the critique, calibrate its scores."""
    stop_at = next((i for i, t in enumerate(tokens) if t in stop_token_ids), None)
    stopped = stop_at is not None
    answer = list(tokens[:stop_at] if stopped else tokens)
    text = tokenizer.decode(answer, skip_special_tokens=True)
    critique: Critique | None = None
    error: str | None = None
    try:
        critique = read_critique(text)
    except CritiqueError as exc:
        # Under the grammar only the token limit can leave JSON unfinished: say so first.
        cut = "" if stopped else f"the answer was cut off at its limit of {len(answer)} tokens; "
        error = cut + str(exc)
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
