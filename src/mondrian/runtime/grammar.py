"""Grammar-constrained decoding with xgrammar, and what we read off the logits meanwhile.

The grammar is compiled once per tokenizer and schema. Each `generate()` call gets a fresh
`DecodingControl`, a transformers LogitsProcessor that, at every step:
  1. hands the token sampled last to each row's grammar matcher,
  2. records the raw logits of the score tokens (digits and ',') for calibration,
  3. masks what the grammar forbids, and special tokens that are not end-of-turn
     (xgrammar treats those as text otherwise: STACK.md saw `<|endoftext|>` inside a string),
  4. reports progress to a callback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

from mondrian.runtime.protocol import TokenCallback

# The tokens whose probabilities calibrate a score: digits 0-9, then ','.
SCORE_TOKENS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", ",")


def single_token_id(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not a single token for this tokenizer: {ids}")
    return ids[0]


class CritiqueGrammar:
    """The critique schema compiled for one tokenizer."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int], schema: dict
    ) -> None:
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        # No free whitespace and compact separators: the longest answer is then known and
        # a random model cannot stall on spaces (DESIGN.md §9).
        self.compiled = compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True
        )
        self.vocab_size = vocab_size
        specials = set(getattr(tokenizer, "all_special_ids", []))
        specials.update(getattr(tokenizer, "added_tokens_decoder", {}).keys())
        self.suppressed_ids = sorted(i for i in specials - set(stop_token_ids) if i < vocab_size)

    def matcher(self) -> xgr.GrammarMatcher:
        return xgr.GrammarMatcher(self.compiled)


class DecodingControl(LogitsProcessor):
    """One per generate() call; rows whose grammar is None decode unconstrained."""

    def __init__(
        self,
        grammars: Sequence[CritiqueGrammar | None],
        score_token_ids: Sequence[int],
        suppressed_ids: Sequence[int],
        on_token: TokenCallback | None = None,
    ) -> None:
        self.matchers = [g.matcher() if g is not None else None for g in grammars]
        self.constrained = [i for i, m in enumerate(self.matchers) if m is not None]
        vocab = next((g.vocab_size for g in grammars if g is not None), 0)
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab) if vocab else None
        self.vocab_size = vocab
        self.score_token_ids = torch.tensor(list(score_token_ids))
        self.suppressed_ids = torch.tensor(list(suppressed_ids), dtype=torch.long)
        self.on_token = on_token
        self.score_logits: list[torch.Tensor] = []  # per step: (batch, len(SCORE_TOKENS))
        self.done = [False] * len(grammars)
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if self.steps > 0:
            self._accept(input_ids[:, -1].tolist())
        self.score_logits.append(scores[:, self.score_token_ids.to(scores.device)].float().cpu())
        if self.suppressed_ids.numel():
            scores[:, self.suppressed_ids.to(scores.device)] = float("-inf")
        if self.bitmask is not None:
            xgr.reset_token_bitmask(self.bitmask)
            for row in self.constrained:
                matcher = self.matchers[row]
                if not matcher.is_terminated():
                    matcher.fill_next_token_bitmask(self.bitmask, row)
            if scores.device.type == "cuda":
                xgr.apply_token_bitmask_inplace(
                    scores,
                    self.bitmask.to(scores.device, non_blocking=True),
                    vocab_size=self.vocab_size,
                )
            else:
                xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=self.vocab_size)
        self.steps += 1
        return scores

    def _accept(self, tokens: list[int]) -> None:
        for row, token in enumerate(tokens):
            if self.done[row]:
                continue
            matcher = self.matchers[row]
            if matcher is not None and not matcher.is_terminated():
                if not matcher.accept_token(token):
                    raise RuntimeError(f"grammar rejected token {token} in row {row}")
                if matcher.is_terminated():
                    self.done[row] = True
            if self.on_token is not None:
                self.on_token(row, self.steps)

    def logits_for(self, row: int) -> torch.Tensor:
        """(steps, len(SCORE_TOKENS)) raw logits of the score tokens for one row."""
        return torch.stack([step[row] for step in self.score_logits])
