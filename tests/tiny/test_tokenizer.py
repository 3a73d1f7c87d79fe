"""The tiny tokenizers: the trained BPE is deterministic and keeps digits apart, and the
special tokens sit where the real vocabularies put them."""

from __future__ import annotations

import pytest

from mondrian.tiny.families import ARCHES, FAMILIES
from mondrian.tiny.model import MODEL_VOCAB_SIZE
from mondrian.tiny.tokenizer import BPE_VOCAB_SIZE, build_tokenizer, train_bpe

pytestmark = pytest.mark.model


def test_tokenizer_training_is_deterministic_and_keeps_digits_apart():
    vocab, merges = train_bpe()
    assert (vocab, merges) == train_bpe()
    assert len(vocab) == BPE_VOCAB_SIZE
    # Score calibration reads one token per digit: no learned token joins a digit to anything.
    assert all(len(token) == 1 for token in vocab if any(ch.isdigit() for ch in token))
    assert all(str(d) in vocab for d in range(10))


@pytest.mark.parametrize("arch", ARCHES)
def test_special_tokens_follow_the_real_vocabulary_order(arch):
    tokenizer = build_tokenizer(arch)
    family = FAMILIES[arch]
    names = (*family.special_tokens, *family.added_tokens)
    ids = tokenizer.convert_tokens_to_ids(list(names))
    assert ids == list(range(BPE_VOCAB_SIZE, BPE_VOCAB_SIZE + len(names)))
    assert len(tokenizer) == BPE_VOCAB_SIZE + len(names) < MODEL_VOCAB_SIZE
    # Same offsets as Qwen's 151643 (<|endoftext|>) .. 151656 (<|video_pad|>).
    base = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") - base == 151652 - 151643
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") - base == 151655 - 151643
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = "<|im_start|>user\nScore 10/10 at f/2.8<|im_end|>"
    encoded = tokenizer(text).input_ids
    assert encoded[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    pieces = [tokenizer.decode([i]) for i in encoded]
    assert [p for p in pieces if any(ch.isdigit() for ch in p)] == ["1", "0", "1", "0", "2", "8"]
    assert tokenizer.decode(encoded) == text
    if family.added_tokens:  # added, not special: skip_special_tokens keeps them, as in Qwen
        assert "<tool_call>" in tokenizer.decode(
            tokenizer("<tool_call>x").input_ids, skip_special_tokens=True
        )
