"""What several commands share: settings from flags, the open state, model flags."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mondrian.config import Settings, load_settings
from mondrian.storage.bootstrap import open_state
from mondrian.storage.db import Database


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="hub id or local path of the base model (default: $MONDRIAN_MODEL)"
    )
    parser.add_argument(
        "--backend", help="auto, transformers or mlx (default: $MONDRIAN_BACKEND or auto)"
    )
    parser.add_argument("--device", help="cuda, mps, cpu or auto")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(
        model=getattr(args, "model", None),
        backend=getattr(args, "backend", None),
        device=getattr(args, "device", None),
    )


def open_db(settings: Settings) -> Database:
    return open_state(settings)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
