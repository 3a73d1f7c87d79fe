"""What every backend decodes with, and how it reads what was decoded: the same rule and
the same reading for every backend, so they stop, constrain and answer alike.

`Decoder`, made once per loaded model, holds the stop ids, the critique grammar, the
score-token ids and the answer budget, and gives each generate() call its two steps: a
`DecodingControl` for a batch and, per finished row, a `Generation` (`read_answer`).

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
from mondrian.backends.protocol import Generation, GenerationRequest, TokenCallback
from mondrian.schema import Critique, generation_schema, longest_answer

if TYPE_CHECKING:
    import torch

    from mondrian.backends.decoding.grammar import DecodingControl

# The end-of-turn tokens Qwen's chat template writes; transformers stops on them too.
END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def stop_token_ids(tokenizer: Any, eos: int | list[int] | None) -> list[int]:
    """The checkpoint's eos id(s) (generation_config's), then END_TOKENS, each once."""
    ids: list[int] = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
    for token in END_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    return list(dict.fromkeys(ids))


class Decoder:
    """The decoding rule of one model: grammar over its vocabulary, stops, budget."""

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        stop_ids: list[int],
        *,
        max_text_chars: int | None = None,
        max_list_items: int | None = None,
    ) -> None:
        # Here, not at the top: the reading below (read_critique, with_expected) serves the
        # vllm backend too, which has neither torch nor xgrammar (backends/vllm/).
        from mondrian.backends.decoding.grammar import (
            SCORE_TOKENS,
            CritiqueGrammar,
            single_token_id,
        )

        self.tokenizer = tokenizer
        self.stop_token_ids = stop_ids
        schema = generation_schema(max_text_chars, max_list_items)
        # +1: the end-of-turn token after the longest JSON the schema allows.
        self.answer_budget = len(longest_answer(max_text_chars, max_list_items)) + 1
        self.grammar = CritiqueGrammar(tokenizer, vocab_size, stop_ids, schema)
        self.score_token_ids = [single_token_id(tokenizer, t) for t in SCORE_TOKENS]

    def limit(self, request: GenerationRequest) -> int:
        """The request's token limit: its own, or the schema's longest answer."""
        return request.max_new_tokens or self.answer_budget

    def control(
        self, requests: Sequence[GenerationRequest], on_token: TokenCallback | None
    ) -> DecodingControl:
        """The logits processor of one batch: a grammar per constrained row."""
        from mondrian.backends.decoding.grammar import DecodingControl

        return DecodingControl(
            [self.grammar if r.constrained else None for r in requests],
            self.score_token_ids,
            self.grammar.suppressed_ids,
            on_token,
            self.grammar.zero_prefixed_ids,
        )

    def finish(
        self,
        request: GenerationRequest,
        tokens: list[int],
        score_logits: torch.Tensor,
        *,
        prompt_tokens: int,
        elapsed: float,
    ) -> Generation:
        """The `Generation` of one finished row: its token ids and its probe rows, one per
        token (backends/decoding/calibration.py)."""
        return read_answer(
            self.tokenizer,
            tokens,
            self.stop_token_ids,
            score_logits,
            prompt_tokens=prompt_tokens,
            elapsed=elapsed,
            adapter=request.adapter,
        )


# --- reading an answer -------------------------------------------------------------------

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
