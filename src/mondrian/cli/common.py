"""What several commands share: settings from flags, the open state, model flags, the help
formatter and the flags' value types."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any

from mondrian.config import FastMode, Settings, fast_path_warning, load_settings
from mondrian.storage.bootstrap import open_state, read_only_state
from mondrian.storage.db import Database

DEVICES = ("auto", "cuda", "mps", "cpu")


def default_note(action: argparse.Action) -> str:
    """ " (default X)" for an option whose default says something (not None, False or empty)
    and whose help does not already name a default; else "". What `--help` and docs/cli.md
    add to the help."""
    default = action.default
    if (
        not action.option_strings
        or default is None
        or default is False  # not `in (...)`: 0 == False, and a 0 default says something
        or default is argparse.SUPPRESS
        or default in ("", (), [])
        or "default" in (action.help or "")
    ):
        return ""
    return f" (default {default})"


class DefaultsFormatter(argparse.HelpFormatter):
    """argparse's formatter with default_note after each help: cli/main.py gives it to every
    parser, so no help has to spell its own default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # argparse %-formats the help: a % in a default is escaped, the help's own is not.
        return (action.help or "") + default_note(action).replace("%", "%%")


# argparse names a type function in its error ("invalid _port value"); these raise
# ArgumentTypeError instead, so the message is "argument --port: not a TCP port: x".


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {text!r}")
    return value


def fraction(text: str) -> float:
    """A number within 0..1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"not a number within 0..1: {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="hub id or local path of the base model (default: $MONDRIAN_MODEL)"
    )
    parser.add_argument(
        "--backend",
        help="auto, transformers, mlx or vllm (default: $MONDRIAN_BACKEND or auto)",
    )
    parser.add_argument(
        "--vllm-url",
        metavar="URL",
        help="with --backend vllm: the vLLM server (default: $MONDRIAN_VLLM_URL)",
    )
    parser.add_argument(
        "--device", choices=DEVICES, help="where the model runs (default: $MONDRIAN_DEVICE or auto)"
    )
    parser.add_argument(
        "--fast",
        choices=[m.value for m in FastMode],
        help="the CUDA fast path: auto (wherever CUDA is), on or off (default: $MONDRIAN_FAST "
        "or auto)",
    )
    parser.set_defaults(loads_model=True)


log = logging.getLogger(__name__)


def settings_from(args: argparse.Namespace) -> Settings:
    # Every command's namespace has these (cli/main.py's defaults); a command with the model
    # flags sets them, and `loads_model`.
    settings = load_settings(
        model=args.model,
        backend=args.backend,
        device=args.device,
        vllm_url=args.vllm_url,
        fast=args.fast,
    )
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
    """On stderr and in the log: `--fast on` (MONDRIAN_FAST) where the fast path cannot run."""
    if settings.fast is not FastMode.ON:
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
