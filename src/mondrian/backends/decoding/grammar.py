"""Grammar-constrained decoding with xgrammar, and what we read off the logits meanwhile.

The grammar is compiled once per (vocabulary, stop ids, schema) in a process (`_COMPILED`:
several backends over one checkpoint share it). Each `generate()` call gets a fresh
`DecodingControl`, a transformers LogitsProcessor that, at every step:
  1. hands the token chosen last to each row's grammar matcher,
  2. records the raw logits of the digit tokens for calibration,
  3. masks what the grammar forbids, and special tokens that are not end-of-turn
     (xgrammar treats those as text otherwise),
  4. records log P(next token starts with "0") under that mask (backends/decoding/calibration.py),
  5. reports progress to a callback.
Its logits must be the model's own: the backends decode greedily with no repetition
penalty or other processor before this one (docs/generation.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

from mondrian.backends.decoding.calibration import zero_continuation
from mondrian.backends.protocol import TokenCallback

# The digit tokens whose logits calibrate a score; the probe rows add one column more
# (calibration.PROBE_WIDTH): the grammar-wide chance that a "0" comes next.
SCORE_TOKENS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")

# (vocabulary digest, vocab_size, stop ids, schema) -> (compiled grammar, zero-prefixed ids)
_COMPILED: dict[tuple[str, int, tuple[int, ...], str], tuple[Any, list[int]]] = {}


def vocabulary_digest(tokenizer: Any) -> str:
    """Identity of a tokenizer's vocabulary (added tokens included), for the grammar cache."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


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
        schema_text = json.dumps(schema)  # key order is the grammar's property order
        key = (vocabulary_digest(tokenizer), vocab_size, tuple(stop_token_ids), schema_text)
        if key not in _COMPILED:
            _COMPILED[key] = self._compile(tokenizer, vocab_size, stop_token_ids, schema_text)
        self.compiled, self.zero_prefixed_ids = _COMPILED[key]
        self.vocab_size = vocab_size
        specials = set(getattr(tokenizer, "all_special_ids", []))
        specials.update(getattr(tokenizer, "added_tokens_decoder", {}).keys())
        self.suppressed_ids = sorted(i for i in specials - set(stop_token_ids) if i < vocab_size)

    @staticmethod
    def _compile(
        tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int], schema_text: str
    ) -> tuple[Any, list[int]]:
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        # No free whitespace and compact separators: the longest answer is then known and
        # a random model cannot stall on spaces.
        compiled = compiler.compile_json_schema(
            schema_text, any_whitespace=False, separators=(",", ":"), strict_mode=True
        )
        # The tokens that turn a written "1" into "10": their text (as the grammar engine
        # decodes it) starts with "0". Special tokens decode to their own text, never "0...".
        zero = [i for i, text in enumerate(info.decoded_vocab) if text.startswith(b"0")]
        return compiled, [i for i in zero if i < vocab_size]

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
        zero_prefixed_ids: Sequence[int] | None = None,
    ) -> None:
        self.matchers = [g.matcher() if g is not None else None for g in grammars]
        self.constrained = [i for i, m in enumerate(self.matchers) if m is not None]
        vocab = next((g.vocab_size for g in grammars if g is not None), 0)
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab) if vocab else None
        self.vocab_size = vocab
        self.score_token_ids = torch.tensor(list(score_token_ids))
        if zero_prefixed_ids is None:  # the first grammar's; else the "0" digit alone
            first = next((g for g in grammars if g is not None), None)
            zero_prefixed_ids = first.zero_prefixed_ids if first else list(score_token_ids)[:1]
        self.zero_prefixed_ids = torch.tensor(list(zero_prefixed_ids), dtype=torch.long)
        self.suppressed_ids = torch.tensor(list(suppressed_ids), dtype=torch.long)
        self.on_token = on_token
        self.score_logits: list[torch.Tensor] = []  # per step: (batch, PROBE_WIDTH)
        self.done = [False] * len(grammars)
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if self.steps > 0:
            self._accept(input_ids[:, -1].tolist())
        digits = scores[:, self.score_token_ids.to(scores.device)].float()
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
        zero = zero_continuation(scores.float(), self.zero_prefixed_ids.to(scores.device))
        self.score_logits.append(torch.cat([digits, zero[:, None]], dim=1).cpu())
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
        """(steps, PROBE_WIDTH) probe rows of one row (backends/decoding/calibration.py)."""
        return torch.stack([step[row] for step in self.score_logits])
