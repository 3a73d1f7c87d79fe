"""`mondrian`: the command line. A command's module has a `register(subparsers)` function
(one per command where a module holds several, as portfolio_cmd.py does); heavy imports
happen inside the handlers so that `mondrian --help` stays fast."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from mondrian import __version__
from mondrian.cli import (
    adapters_cmd,
    advisors_cmd,
    analyze_cmd,
    completion_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    doctor_cmd,
    evaluation_cmd,
    jobs_cmd,
    library_cmd,
    models_cmd,
    portfolio_cmd,
    reviews_cmd,
    serve_cmd,
    training_cmd,
    vllm_cmd,
)
from mondrian.cli.common import DefaultsFormatter
from mondrian.cli.model_facts import cost_table
from mondrian.errors import MondrianError

# In the order `mondrian --help` lists them: the demo, then the life of a critique, then
# the operator's tools.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    demo_cmd.register,
    advisors_cmd.register,
    analyze_cmd.register,
    jobs_cmd.register_history,
    jobs_cmd.register_export,
    library_cmd.register_delete,
    serve_cmd.register,
    portfolio_cmd.register_index,
    portfolio_cmd.register_profiles,
    reviews_cmd.register,
    training_cmd.register_dataset,
    training_cmd.register_train,
    adapters_cmd.register,
    evaluation_cmd.register_evaluate,
    evaluation_cmd.register_ab_report,
    models_cmd.register,
    doctor_cmd.register,
    db_cmd.register,
    config_cmd.register,
    completion_cmd.register,
    vllm_cmd.register,
)


class _RawDefaultsFormatter(DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """For a parser that asked for a raw description (the top level's and `models`' hold
    the default model's cost table): the defaults shown, the table's lines kept."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mondrian",
        description="Critique photographs in the voice of master photographers.",
        epilog="State lives under $MONDRIAN_HOME (default ~/.mondrian). Settings come from\n"
        "flags, MONDRIAN_* variables and $MONDRIAN_HOME/config.toml (mondrian config show).\n\n"
        + cost_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the table keeps its lines
    )
    parser.add_argument("--version", action="version", version=f"mondrian {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    # What common.settings_from reads; commands with model flags override them.
    parser.set_defaults(
        model=None, backend=None, device=None, vllm_url=None, fast=None, loads_model=False
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    for each in _parsers(parser):
        raw = issubclass(each.formatter_class, argparse.RawDescriptionHelpFormatter)
        each.formatter_class = _RawDefaultsFormatter if raw else DefaultsFormatter
    return parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subcommand's, at any depth (argparse lists them only through its
    subparsers action)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except MondrianError as exc:
        print(f"mondrian: error: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`mondrian ... | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("mondrian: interrupted", file=sys.stderr)
        return 130
