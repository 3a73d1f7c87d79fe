"""`mondrian dataset build`: an advisor's LoRA training data from profiles and reviews."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mondrian.cli.common import open_db, print_json, settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="build LoRA training data for an advisor")
    commands = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    build = commands.add_parser(
        "build",
        help="write train/validation JSONL, images and a manifest",
        description=(
            "Build an advisor's training data: one example per image (the advisor's prompt "
            "and the target critique) from its curated and model profiles, and with "
            "--include-reviews from reviewed analyses. Targets the constrained model could "
            "not write are reported and left out. The split is by image; augmentations "
            "stay with their source image on the training side."
        ),
    )
    build.add_argument("--advisor", required=True, help="advisor id")
    build.add_argument("--out", required=True, type=Path, help="folder to write the data set to")
    build.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of images held out for validation (default 0.2)",
    )
    build.add_argument(
        "--augment",
        type=int,
        default=0,
        metavar="N",
        help="augmented copies per training image (crop, flip, exposure, rotation; default 0)",
    )
    build.add_argument(
        "--include-reviews", action="store_true", help="also use reviewed analyses as targets"
    )
    build.add_argument("--seed", type=int, default=0, help="split and augmentation seed")
    build.add_argument(
        "--max-text-chars",
        type=int,
        help="check strings against this tighter bound too (default: $MONDRIAN_MAX_TEXT_CHARS)",
    )
    build.add_argument("--force", action="store_true", help="replace an existing data set at --out")
    build.add_argument("--json", action="store_true", help="print the manifest as JSON")
    build.set_defaults(handler=build_dataset_command)


def build_dataset_command(args: argparse.Namespace) -> int:
    from mondrian.training.dataset import build_dataset

    settings = settings_from(args)
    with open_db(settings) as db:
        manifest = build_dataset(
            db,
            settings,
            args.advisor,
            args.out,
            val_fraction=args.val_fraction,
            augment=args.augment,
            include_reviews=args.include_reviews,
            seed=args.seed,
            max_text_chars=args.max_text_chars or settings.max_text_chars,
            force=args.force,
            warn=lambda message: print(f"mondrian: {message}", file=sys.stderr),
        )
    if args.json:
        print_json(manifest)
        return 0
    splits = manifest["splits"]
    sources = ", ".join(f"{n} {s}" for s, n in manifest["sources"].items() if n)
    print(f"{args.out}")
    print(
        f"train {splits['train']['examples']} examples ({splits['train']['images']} images), "
        f"validation {splits['validation']['examples']} examples "
        f"({splits['validation']['images']} images); "
        f"targets: {sources}"
    )
    rejected = manifest["rejected"]["count"]
    if rejected:
        print(f"{rejected} invalid target(s) left out; reasons in manifest.json", file=sys.stderr)
    return 0
