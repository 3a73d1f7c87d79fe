"""Fixtures of the backend tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def generated_ids(monkeypatch) -> list[list[int]]:
    """The token ids each generation is read from, in order, whichever backend: decoding
    skips special tokens, so only the ids show whether one was generated. Both backends
    read through backends/decoding/decoder.py, so that is where to listen."""
    from mondrian.backends.decoding import decoder

    seen: list[list[int]] = []
    read_answer = decoder.read_answer

    def recording(tokenizer, tokens, *args, **kwargs):
        seen.append(list(tokens))
        return read_answer(tokenizer, tokens, *args, **kwargs)

    monkeypatch.setattr(decoder, "read_answer", recording)
    return seen
