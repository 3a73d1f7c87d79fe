"""What every backend decodes with, made once per loaded model: the stop ids, the critique
grammar, the score-token ids and the answer budget, with the two steps each backend's
generate() takes from them (a `DecodingControl` for a batch, a `Generation` for a finished
row). Both backends hold one, so they stop, constrain and read alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mondrian.backends.decoding.answer import read_answer
from mondrian.backends.decoding.grammar import (
    SCORE_TOKENS,
    CritiqueGrammar,
    DecodingControl,
    single_token_id,
)
from mondrian.backends.protocol import Generation, GenerationRequest, TokenCallback
from mondrian.schema import generation_schema, longest_answer

if TYPE_CHECKING:
    import torch

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
