"""The text the tiny checkpoints' tokenizer is trained on, generated offline.

A tokenizer trained on this gives the tiny models token boundaries that look like a real
Qwen vocabulary for the text Mondrian actually feeds them: English prose about
photographs, critique JSON with the schema's keys, scores, camera settings and
punctuation. The generator is deterministic (a fixed `random.Random` over fixed word
lists), so the trained tokenizer is byte-identical from one build to the next.

The words and sentence templates are data shipped in the package:
- `data/words.json`: named word lists. Order matters (a draw is an index into a list), and
  a word may sit in two lists (`articles` and `joiners` are runs of `function_words`).
- `data/templates.json`: `sentences`, drawn uniformly together with one free-word-order
  "sentence" made here, and `chat`, one conversation. A `{slot}` is filled left to right:
  `{list}` draws a word of that list, `{list+}` draws one and inflects it, `{int:A:B}` is
  `randrange(A, B)` (`{int:B}`: `randrange(B)`), `{dimension}` a critique dimension's
  name, and `{phrase}`, `{sentence}`, `{paragraph}`, `{critique}` what this module writes.

Only the standard library and `mondrian.schema` are used here, so this stays light; the
data are read on first use.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from mondrian.schema import DIMENSIONS

# Changing anything that feeds the corpus (this code or data/*.json) changes every tiny
# tokenizer; bump this so the artifacts say so (tests/tiny/test_corpus.py pins the text).
CORPUS_VERSION = "1"

_SEED = 20261122
_N_DOCS = 1500
# Inflections drawn for a `{list+}` slot; the empty suffix twice, so half the words stay bare.
_SUFFIXES = ("", "", "s", "ed", "ing", "ly", "er", "ness")
_SLOT = re.compile(r"\{([^{}]+)\}")
_WRITTEN = frozenset({"phrase", "sentence", "paragraph", "critique", "dimension"})


@functools.cache
def _words() -> dict[str, tuple[str, ...]]:
    return {name: tuple(words) for name, words in _load("words.json").items()}


@functools.cache
def _templates() -> dict[str, Any]:
    templates = _load("templates.json")
    # A bad edit of the data fails here, on first use, not in the middle of a build.
    for template in (*templates["sentences"], templates["chat"]):
        for slot in _SLOT.findall(template):
            name = slot.removesuffix("+")
            if slot not in _WRITTEN and not slot.startswith("int:") and name not in _words():
                raise ValueError(f"unknown slot {{{slot}}} in tiny/data/templates.json")
    return templates


def _load(name: str) -> Any:
    text = resources.files("mondrian.tiny").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)


def _inflect(word: str, rng: random.Random) -> str:
    """A plausible inflected form, so the vocabulary learns common suffixes."""
    if "-" in word:
        return word
    suffix = rng.choice(_SUFFIXES)
    if suffix in ("ed", "ing", "er") and word.endswith("e"):
        word = word[:-1]
    return word + suffix


def _maybe_title(word: str, rng: random.Random) -> str:
    return word.capitalize() if rng.random() < 0.12 else word


class _Writer:
    """Writes documents from one random stream: every draw, in order, is part of the
    contract, since it decides the trained tokenizer."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = _words()
        self.templates = _templates()

    def pick(self, words: tuple[str, ...]) -> str:
        return self.rng.choice(words)

    def fill(self, template: str) -> str:
        # re.sub calls the function for each slot from left to right: the draw order.
        return _SLOT.sub(lambda match: self.slot(match.group(1)), template)

    def slot(self, slot: str) -> str:
        if slot == "phrase":
            return self.phrase()
        if slot == "sentence":
            return self.sentence()
        if slot == "paragraph":
            return self.paragraph()
        if slot == "critique":
            return self.critique()
        if slot == "dimension":
            return self.pick(DIMENSIONS).replace("_", " ")
        if slot.startswith("int:"):
            bounds = [int(n) for n in slot.removeprefix("int:").split(":")]
            return str(self.rng.randrange(*bounds))
        if slot.endswith("+"):
            return _inflect(self.pick(self.words[slot[:-1]]), self.rng)
        return self.pick(self.words[slot])

    def phrase(self) -> str:
        words = self.words
        parts = [self.pick(words["articles"])]
        if self.rng.random() < 0.6:
            parts.append(_inflect(self.pick(words["adjectives"]), self.rng))
        parts.append(_inflect(self.pick(words["nouns"]), self.rng))
        return " ".join(parts)

    def sentence(self) -> str:
        sentences = self.templates["sentences"]
        kind = self.rng.randrange(len(sentences) + 1)
        s = self.fill(sentences[kind]) if kind < len(sentences) else self.free_words()
        s = s[0].upper() + s[1:]
        return s + self.pick(self.words["endings"])

    def free_words(self) -> str:
        """Words in no order, some capitalized: the "sentence" no template makes."""
        r, words = self.rng, self.words
        pool = words["nouns"] + words["adjectives"] + words["verbs"] + words["function_words"]
        return " ".join(
            _maybe_title(_inflect(self.pick(pool), r), r) for _ in range(r.randrange(5, 14))
        )

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randrange(2, 6)))

    def critique(self) -> str:
        r = self.rng
        body: dict[str, Any] = {
            "image_description": self.sentence(),
            "dimensions": {
                key: {
                    "score": r.randrange(11),
                    "comment": self.sentence(),
                    "recommendation": self.sentence(),
                }
                for key in DIMENSIONS
            },
            "strengths": [self.sentence() for _ in range(r.randrange(1, 4))],
            "improvements": [self.sentence() for _ in range(r.randrange(1, 4))],
        }
        if r.random() < 0.3:
            body["overall_score"] = round(r.uniform(0, 10), 2)
            body["overall_grade"] = self.pick(self.words["grades"])
        # Both the compact form (what constrained decoding emits) and the pretty form.
        if r.random() < 0.5:
            return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return json.dumps(body, indent=r.choice((None, 2)), ensure_ascii=False)

    def chat(self) -> str:
        return self.fill(self.templates["chat"])

    def numbers(self) -> str:
        r = self.rng
        nums = " ".join(str(r.randrange(10 ** r.randrange(1, 6))) for _ in range(8))
        return f"{self.sentence()} {nums}\n{self.paragraph()}"


def corpus(n_docs: int = _N_DOCS) -> Iterator[str]:
    """Yield the training documents, the same ones on every call."""
    writer = _Writer(random.Random(_SEED))
    for i in range(n_docs):
        kind = i % 5
        if kind in (0, 1):
            yield writer.paragraph()
        elif kind == 2:
            yield writer.critique()
        elif kind == 3:
            yield writer.chat()
        else:
            yield writer.numbers()
