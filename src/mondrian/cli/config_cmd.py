"""`mondrian config show|init`: the effective settings and where each comes from; a
commented config file to start from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mondrian.cli.common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show the effective settings; write a config file",
        description="Settings come from flags, then MONDRIAN_* variables, then the config "
        "file ($MONDRIAN_HOME/config.toml, or the file MONDRIAN_CONFIG names), then defaults.",
    )
    commands = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    show = commands.add_parser(
        "show",
        help="print every setting, its value and where it came from",
        description="Every setting's effective value and its source: flag, env NAME, "
        "file PATH or default. Secrets are masked.",
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_config)

    init = commands.add_parser(
        "init",
        help="write a commented config file with every setting at its default",
        description="Write a config file in which every setting is commented out at its "
        "default, with its help and environment variable. An existing file is kept unless "
        "--force is given.",
    )
    init.add_argument(
        "--out",
        metavar="FILE",
        help="where to write it; '-' prints it (default: the file `config show` reads)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(handler=init_config)


def _shown(value: object) -> object:
    # SecretStr prints as asterisks (review_tokens' values too); a Path or a mode as text,
    # so the JSON stays plain.
    if isinstance(value, dict):
        return {key: _shown(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shown(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return str(value)


def show_config(args: argparse.Namespace) -> int:
    from mondrian.config import config_file_path, load_settings, setting_origins

    overrides = {"model": args.model, "backend": args.backend, "device": args.device}
    settings = load_settings(**overrides)  # a bad value anywhere is refused here
    origins = setting_origins(overrides)
    rows = [(name, _shown(getattr(settings, name)), origins[name]) for name in origins]
    path = config_file_path(overrides.get("home"))
    if args.json:
        print_json(
            {
                "config_file": None if path is None else str(path),
                "settings": {n: {"value": v, "source": s} for n, v, s in rows},
            }
        )
        return 0
    print(f"config file: {path if path is not None else '(none)'}")
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value!s:<40}  {source}")
    return 0


def init_config(args: argparse.Namespace) -> int:
    from mondrian.config import config_location, config_template
    from mondrian.errors import InvalidInput

    text = config_template()
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.out).expanduser() if args.out else config_location()
    if path.exists() and not args.force:
        raise InvalidInput(f"{path} exists; pass --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path}")
    return 0
