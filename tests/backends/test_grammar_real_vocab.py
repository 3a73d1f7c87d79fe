"""The generation schema over Qwen's real vocabulary, through xgrammar's own matcher: no
special token is ever allowed inside a critique string (any grammar engine, e.g. vLLM's,
then returns clean strings), and after a written "1" the calibration column counts the
`,"` token that ends the number."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.model

TEXT_CHARS = 40
LIST_ITEMS = 2


@pytest.fixture(scope="module")
def grammar_and_tokenizer(tiny_checkpoint_factory):
    from transformers import AutoTokenizer

    from mondrian.backends.decoding.grammar import CritiqueGrammar
    from mondrian.schema import generation_schema

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint_factory(vocab="real"))
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    schema = generation_schema(TEXT_CHARS, LIST_ITEMS)
    # The stop ids as the backends pass them; vocab_size as the checkpoint's head (>= len).
    grammar = CritiqueGrammar(tokenizer, len(tokenizer), stops, schema)
    return grammar, tokenizer


def _special_ids(tokenizer) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    return sorted(ids)


def _allowed(grammar, matcher) -> set[int]:
    import torch
    import xgrammar as xgr

    mask = xgr.allocate_token_bitmask(1, grammar.vocab_size)
    matcher.fill_next_token_bitmask(mask, 0)
    scores = torch.zeros(1, grammar.vocab_size)
    xgr.apply_token_bitmask_inplace(scores, mask, vocab_size=grammar.vocab_size)
    return set(torch.isfinite(scores[0]).nonzero().flatten().tolist())


def _walk(grammar, tokenizer, text: str):
    matcher = grammar.matcher()
    for token in tokenizer.encode(text, add_special_tokens=False):
        assert matcher.accept_token(token), tokenizer.decode([token])
    return matcher


def test_no_special_token_is_allowed_inside_a_string(grammar_and_tokenizer):
    grammar, tokenizer = grammar_and_tokenizer
    specials = _special_ids(tokenizer)
    named = tokenizer.convert_tokens_to_ids(["<|vision_pad|>", "<|im_start|>", "<|image_pad|>"])
    assert set(named) <= set(specials)
    # Inside strings: just opened, mid-text, after a '<'-free run, in a list item.
    prefixes = [
        '{"image_description":"',
        '{"image_description":"A grey sky ',
        '{"image_description":"a > b |',
        '{"image_description":"x","dimensions":{"composition":{"score":3,"comment":"Fine',
    ]
    for prefix in prefixes:
        allowed = _allowed(grammar, _walk(grammar, tokenizer, prefix))
        assert allowed, prefix
        assert not allowed & set(specials), (prefix, sorted(allowed & set(specials)))
        # Nor any ordinary token whose text would start a special token.
        assert not any("<" in tokenizer.decode([t]) for t in allowed), prefix


def test_after_a_written_one_the_grammar_allows_comma_quote(grammar_and_tokenizer):
    """The `,"` token ends a "1" as a finished score; it and "0" are the choices, and the
    calibration column P("0" next) is computed over all of them (DecodingControl)."""
    import torch

    from mondrian.backends.decoding.calibration import score_distribution
    from mondrian.backends.decoding.grammar import SCORE_TOKENS, DecodingControl

    grammar, tokenizer = grammar_and_tokenizer
    prefix = '{"image_description":"x","dimensions":{"composition":{"score":1'
    matcher = _walk(grammar, tokenizer, prefix)
    comma_quote = tokenizer.convert_tokens_to_ids(',"')
    zero, comma = tokenizer.convert_tokens_to_ids(["0", ","])
    allowed = _allowed(grammar, matcher)
    assert {comma_quote, zero} <= allowed
    assert grammar.zero_prefixed_ids == [zero]  # Qwen splits digits: "0" alone

    digit_ids = [tokenizer.convert_tokens_to_ids(t) for t in SCORE_TOKENS]
    control = DecodingControl([grammar], digit_ids, grammar.suppressed_ids)
    control.matchers[0] = matcher  # the row is at the step after its "1"
    logits = torch.full((1, grammar.vocab_size), 0.0)
    logits[0, comma_quote] = 12.0  # the model means 1: `,"` carries the mass
    logits[0, zero] = 4.0
    logits[0, comma] = 2.0
    logits[0, grammar.suppressed_ids[0]] = 30.0  # a special token: suppressed, not counted
    control(torch.zeros(1, 1, dtype=torch.long), logits.clone())
    column = float(control.logits_for(0)[0, 10])
    masked = torch.full((grammar.vocab_size,), float("-inf"))
    masked[list(allowed)] = logits[0, list(allowed)]
    masked[grammar.suppressed_ids] = float("-inf")
    expected = float(masked[zero] - torch.logsumexp(masked, 0))
    assert column == pytest.approx(expected, abs=1e-5)
    assert math.exp(column) < 1e-3
    rows = torch.full((2, 11), -1e4)
    rows[0, 1] = 0.0
    rows[1] = control.logits_for(0)[0]
    dist = score_distribution(rows, 0, "1")
    assert sum(i * p for i, p in enumerate(dist)) == pytest.approx(1.0, abs=0.01)


def test_special_tokens_text_starts_with_the_excluded_character(grammar_and_tokenizer):
    import re

    from mondrian.schema import GENERATION_CHAR_CLASS

    _, tokenizer = grammar_and_tokenizer
    for token_id in _special_ids(tokenizer):
        text = tokenizer.convert_ids_to_tokens(token_id)
        assert not re.fullmatch(GENERATION_CHAR_CLASS, text[0]), text
