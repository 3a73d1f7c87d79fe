"""The tiny tokenizer's training text: generated from the shipped word lists and templates,
the same text on every call. Cheap (standard library only)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

from mondrian.schema import DIMENSIONS
from mondrian.tiny.corpus import CORPUS_VERSION, corpus

# The digest of the text every tiny tokenizer is trained on. A change here changes every
# tiny checkpoint's tokenizer.json: bump CORPUS_VERSION with it (tiny/corpus.py).
CORPUS_SHA256 = {"1": "1e401d47915e9e95f3686e976e83867295e5609f1dc65915018f81546ae1abe3"}


def _data(name: str) -> dict:
    path = resources.files("mondrian.tiny").joinpath("data", name)
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_corpus_is_pinned_by_its_version():
    text = "\x00".join(corpus())
    assert hashlib.sha256(text.encode()).hexdigest() == CORPUS_SHA256[CORPUS_VERSION]
    assert "\x00".join(corpus()) == text


def test_the_corpus_holds_what_mondrian_feeds_the_models():
    docs = list(corpus(50))
    assert len(docs) == 50
    critique = json.loads(docs[2])  # every fifth document from the third is a critique
    assert set(critique["dimensions"]) == set(DIMENSIONS)
    assert docs[3].startswith("system\nYou are ") and "\nassistant\n{" in docs[3]
    # Every template slot was filled: no brace of a template survives outside the JSON.
    prose = [d for i, d in enumerate(docs) if i % 5 in (0, 1)]
    assert not any("{" in d or "}" in d for d in prose)


def test_the_word_lists_are_what_the_generator_expects():
    words = _data("words.json")
    assert all(isinstance(w, str) and w for ws in words.values() for w in ws)
    # The corpus.py module doc promises these two are runs of the function words.
    function = words["function_words"]
    for run in (words["articles"], words["joiners"]):
        start = function.index(run[0])
        assert function[start : start + len(run)] == run
