"""What several commands share: settings from flags, the open state, model flags."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any

from mondrian.config import Settings, fast_path_warning, load_settings
from mondrian.storage.bootstrap import open_state, read_only_state
from mondrian.storage.db import Database


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="hub id or local path of the base model (default: $MONDRIAN_MODEL)"
    )
    parser.add_argument(
        "--backend", help="auto, transformers or mlx (default: $MONDRIAN_BACKEND or auto)"
    )
    parser.add_argument("--device", help="cuda, mps, cpu or auto")
    parser.set_defaults(loads_model=True)


log = logging.getLogger(__name__)


def settings_from(args: argparse.Namespace) -> Settings:
    # Every command's namespace has these (cli/main.py's defaults); a command with the model
    # flags sets them, and `loads_model`.
    settings = load_settings(model=args.model, backend=args.backend, device=args.device)
    # Commands that load a model (analyze, serve, evaluate, index, adapters merge/export):
    # the place a fast setting that cannot apply should be said.
    if args.loads_model:
        warn_if_fast_unusable(settings)
    return settings


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False without torch); imported only when asked."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def warn_if_fast_unusable(settings: Settings) -> None:
    """On stderr and in the log: MONDRIAN_FAST=1 set where the fast path cannot run."""
    if not settings.fast:
        return  # torch is not imported for the common case
    message = fast_path_warning(settings, cuda_available())
    if message is None:
        return
    print(f"mondrian: warning: {message}", file=sys.stderr)
    log.warning(message)


def open_db(settings: Settings) -> Database:
    return open_state(settings)


def read_db(settings: Settings) -> contextlib.AbstractContextManager[Database]:
    """The state for a read-only command: it creates nothing under MONDRIAN_HOME."""
    return read_only_state(settings)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
