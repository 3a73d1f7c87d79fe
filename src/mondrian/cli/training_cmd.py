"""Training from the command line: `mondrian dataset build` makes an advisor's LoRA
training data from profiles and reviews; `mondrian train` trains a LoRA on it and registers
it as the advisor's next version `advisor@vN`.

Data-parallel: `torchrun --nproc_per_node N -m mondrian train ...` or
`accelerate launch --multi_gpu --num_processes N -m mondrian train ...`.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from mondrian.cli.common import open_db, print_json, settings_from
from mondrian.errors import InvalidInput
from mondrian.training.config import ConfigError, TrainConfig


def register_dataset(subparsers: argparse._SubParsersAction) -> None:
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


def register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a LoRA adapter for an advisor",
        description=(
            "Train a LoRA on the language model's linear layers from a data set built by "
            "`mondrian dataset build`, checkpoint every epoch, and register the result as "
            "the advisor's next adapter version. The new version is activated with "
            "--activate, or when the advisor has no active adapter yet."
        ),
    )
    parser.add_argument("--advisor", required=True, help="advisor id")
    parser.add_argument(
        "--dataset", required=True, type=Path, help="data set folder (mondrian dataset build)"
    )
    parser.add_argument("--config", type=Path, help="TOML file of settings (configs/train/)")
    add_config_flags(parser)
    parser.add_argument(
        "--backend", help="auto, transformers or mlx (default: $MONDRIAN_BACKEND or auto)"
    )
    parser.add_argument(
        "--activate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="activate the new version (default: only if the advisor has no active adapter)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="run folder for checkpoints (default: under $MONDRIAN_HOME/runs/ADVISOR/)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print the new version as JSON")
    parser.set_defaults(handler=train_command)


# --- TrainConfig's fields as flags ---------------------------------------------------------


def flag_of(field: str) -> str:
    """The flag of a TrainConfig field ('batch_size' -> '--batch-size'); other names as-is."""
    return "--" + field.replace("_", "-") if field in TrainConfig.model_fields else field


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its type, choices and help taken from the field.

    Every flag defaults to None, which means unset: a value comes from the flag, else the
    --config file, else the field's default (the one the help shows).
    """
    group = parser.add_argument_group(
        "training settings",
        "Each overrides the --config file, which overrides the default shown.",
    )
    for name, field in TrainConfig.model_fields.items():
        kind = _flag_type(name, field.annotation)
        help_text = field.description or name
        if isinstance(field.default, bool):
            help_text += f" Default: {'on' if field.default else 'off'}."
        elif field.default is not None:
            help_text += f" Default: {field.default}."
        options: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is Literal:
            choices = get_args(kind)
            options.update(type=type(choices[0]), choices=choices)
        else:
            options["type"] = kind
        group.add_argument(flag_of(name), **options)


def _flag_type(name: str, annotation: Any) -> Any:
    """The field's type without its None (`int | None` -> int); a flag's kind of value."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if annotation in (bool, int, float, str) or get_origin(annotation) is Literal:
        return annotation
    # A new field of another type needs its own flag rule here; fail at parser build.
    raise TypeError(f"TrainConfig.{name}: no flag for a field of type {annotation!r}")


def train_command(args: argparse.Namespace) -> int:
    from mondrian.backends.protocol import resolve_backend_name
    from mondrian.errors import Unavailable
    from mondrian.training.registry import describe

    settings = settings_from(args)
    cfg = config_from(args)  # bad flags fail here, before torch is imported
    if resolve_backend_name(settings.backend) == "mlx":
        try:
            from mondrian.training.mlx_train import train_mlx as train
        except ImportError:
            raise Unavailable(
                "--backend mlx needs the 'mlx' extra (pip install mondrian[mlx])"
            ) from None
    else:
        from mondrian.training.train import train

    result = train(
        cfg,
        advisor_id=args.advisor,
        dataset_dir=args.dataset,
        settings=settings,
        run_dir=args.out,
        resume=args.resume,
        activate=args.activate,
        progress=not args.no_progress,
    )
    if result.adapter is None:  # another process of a data-parallel run
        return 0
    if args.json:
        print_json(
            {
                **describe(result.adapter),
                "activated": result.activated,
                "run_dir": str(result.run_dir),
                "seconds_per_step": result.seconds_per_step,
                "metrics": result.adapter.metadata.get("metrics", {}),
            }
        )
        return 0
    state = result.state
    status = "active" if result.adapter.active else "not active"
    print(f"{result.adapter.ref} ({status}) {result.adapter.path}")
    if state.step_losses:
        print(
            f"loss {state.step_losses[0]:.4f} -> {state.train_loss[-1]:.4f} "
            f"(last epoch), {result.seconds_per_step:.3f} s/step, {state.step} steps"
        )
    val = [v for v in state.val_loss if v is not None]
    if val:
        print(f"validation loss per epoch: {', '.join(f'{v:.4f}' for v in val)}")
    return 0


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: defaults, then --config, then the flags given."""
    from mondrian.training.config import load_config

    values = vars(args)
    overrides = {name: values[name] for name in TrainConfig.model_fields}
    try:
        return load_config(args.config, **overrides)
    except ConfigError as exc:
        if exc.source is not None:
            raise  # the file's own values: named as the file spells them
        raise InvalidInput(exc.describe(flag_of)) from None
