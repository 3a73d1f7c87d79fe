"""`mondrian train`: a LoRA for one advisor, registered as its next version `advisor@vN`.

Data-parallel: `torchrun --nproc_per_node N -m mondrian train ...` or
`accelerate launch --multi_gpu --num_processes N -m mondrian train ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mondrian.cli.common import print_json, settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument(
        "--model", help="base model hub id or path (default: config file, then $MONDRIAN_MODEL)"
    )
    parser.add_argument("--config", type=Path, help="TOML file of settings (configs/train/)")
    parser.add_argument("--rank", type=int, help="LoRA rank")
    parser.add_argument("--alpha", type=float, help="LoRA alpha")
    parser.add_argument("--dropout", type=float, help="LoRA dropout")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--epochs", type=int, help="passes over the training split")
    parser.add_argument("--batch-size", type=int, help="examples per step per process")
    parser.add_argument("--grad-accum", type=int, help="steps per optimizer update")
    parser.add_argument("--max-pixels", type=int, help="pixel budget per image")
    parser.add_argument("--seed", type=int, help="seed for data order, dropout and init")
    parser.add_argument("--device", help="cuda, mps, cpu or auto")
    parser.add_argument(
        "--backend", help="auto, transformers or mlx (default: $MONDRIAN_BACKEND or auto)"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="base weights' dtype (auto: bfloat16 on CUDA, else float32)",
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


def train_command(args: argparse.Namespace) -> int:
    from mondrian.backends.registry import resolve_backend_name
    from mondrian.errors import Unavailable
    from mondrian.training.config import load_config
    from mondrian.training.registry import describe

    settings = settings_from(args)
    if resolve_backend_name(settings.backend) == "mlx":
        try:
            from mondrian.training.mlx_train import train_mlx as train
        except ImportError:
            raise Unavailable(
                "--backend mlx needs the 'mlx' extra (pip install mondrian[mlx])"
            ) from None
    else:
        from mondrian.training.train import train

    cfg = load_config(
        args.config,
        model=args.model,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_pixels=args.max_pixels,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
    )
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
