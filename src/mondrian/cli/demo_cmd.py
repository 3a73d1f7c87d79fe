"""`mondrian demo`: the main job, offline, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_BACKENDS = ("transformers", "mlx")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline offline on a tiny model",
        description="Build a tiny model, index a sample portfolio, train and evaluate an "
        "adapter (held-out error first), critique a photo that is not in the portfolio in "
        "three modes and serve one HTTP request.",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo-out"), help="folder for everything it writes"
    )
    parser.add_argument(
        "--model", help="a real model (hub id or path) instead of the tiny random one"
    )
    parser.add_argument(
        "--backend",
        choices=DEMO_BACKENDS,
        default="transformers",
        help="transformers (torch) or mlx (Apple Silicon; needs the mlx extra: make demo-mlx)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="training config TOML (default: the shipped one that fits the model)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every stage, with a few training epochs and no augmentation (a smoke test)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mondrian.demo.run import run_demo

    if args.backend == "mlx":
        _require_mlx()  # before the tiny model is built, not at step 2
    run_demo(
        args.workdir,
        model=args.model,
        config=args.config,
        quick=args.quick,
        progress=not args.no_progress,
        backend_name=args.backend,
    )
    return 0


def _require_mlx() -> None:
    from mondrian.errors import Unavailable

    try:
        import mlx.core  # noqa: F401
        import mlx_vlm  # noqa: F401
    except ImportError:
        raise Unavailable(
            "--backend mlx needs the 'mlx' extra: pip install 'mondrian[mlx]' (or make demo-mlx)"
        ) from None
