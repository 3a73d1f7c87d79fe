"""`mondrian adapters list|activate|rollback|deactivate|delete|merge|export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mondrian.cli.common import open_db, print_json, settings_from
from mondrian.config import Settings
from mondrian.errors import NotFound
from mondrian.storage.bootstrap import open_existing_state
from mondrian.storage.db import Database


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("adapters", help="LoRA adapter versions (advisor@vN)")
    commands = parser.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="list adapter versions")
    listing.add_argument("--advisor", help="only this advisor's versions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_command)

    activate = commands.add_parser("activate", help="serve this version for its advisor")
    activate.add_argument("ref", metavar="ADVISOR@vN", help="the version to serve")
    activate.add_argument(
        "--vllm-url",
        metavar="URL",
        help="load it on this vLLM server first (default: $MONDRIAN_VLLM_URL with "
        "MONDRIAN_BACKEND=vllm)",
    )
    activate.set_defaults(handler=activate_command)

    rollback = commands.add_parser("rollback", help="activate the version below the active one")
    rollback.add_argument("advisor", metavar="ADVISOR", help="advisor id")
    rollback.set_defaults(handler=rollback_command)

    deactivate = commands.add_parser("deactivate", help="serve the base model for this advisor")
    deactivate.add_argument("advisor", metavar="ADVISOR", help="advisor id")
    deactivate.set_defaults(handler=deactivate_command)

    delete = commands.add_parser("delete", help="delete a version that is not active")
    delete.add_argument("ref", metavar="ADVISOR@vN", help="the version to delete")
    delete.set_defaults(handler=delete_command)

    merge = commands.add_parser(
        "merge",
        help="write the base model with the adapter folded in",
        description="Write a full checkpoint (model + processor) with the adapter merged in.",
    )
    merge.add_argument("ref", metavar="ADVISOR@vN", help="the version to merge into the base")
    merge.add_argument("out", type=Path, metavar="OUT", help="folder for the merged model")
    merge.add_argument("--model", help="base model (default: the one the adapter records)")
    merge.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="dtype of the merge and of the written weights (default float32)",
    )
    merge.add_argument("--force", action="store_true", help="replace a merged model at OUT")
    merge.set_defaults(handler=merge_command, loads_model=True)

    export = commands.add_parser(
        "export",
        help="convert an adapter for another runtime",
        description=(
            "Write the adapter in another runtime's layout (mlx: mlx-vlm). With a local "
            "base model, OUT/base is that model in the form mlx-vlm's loader reads (files "
            "hard-linked): `mlx_vlm.load('OUT/base', adapter_path='OUT')`."
        ),
    )
    export.add_argument("ref", metavar="ADVISOR@vN", help="the version to export")
    export.add_argument("--format", required=True, choices=("mlx",), help="target layout")
    export.add_argument("out", type=Path, metavar="OUT", help="folder for the exported adapter")
    export.add_argument("--model", help="base model (default: the one the adapter records)")
    export.add_argument(
        "--no-base", action="store_true", help="write the adapter only, no OUT/base"
    )
    export.add_argument("--force", action="store_true", help="replace an export at OUT")
    export.set_defaults(handler=export_command, loads_model=True)


def _existing_db(settings: Settings) -> Database:
    """The database, for commands that only read it: never created by them."""
    db = open_existing_state(settings)
    if db is None:
        raise NotFound(
            f"no adapter versions yet (no Mondrian state at {settings.home_dir}); "
            "train one with `mondrian train`"
        )
    return db


def list_command(args: argparse.Namespace) -> int:
    from mondrian.training.registry import describe, list_versions

    # A listing creates no state: without a database there is simply nothing to list.
    db = open_existing_state(settings_from(args))
    versions = []
    if db is not None:
        with db:
            versions = list_versions(db, args.advisor)
    rows = [describe(a) for a in versions]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no adapter versions" + (f" for {args.advisor}" if args.advisor else ""))
        return 0
    width = max(len(r["ref"]) for r in rows)
    print(f"{'VERSION':<{width}}  ACTIVE  RANK  TRAIN   VAL     FACTS    CREATED")
    for r in rows:
        # FACTS: the facts version it learned from ("unknown" when it records none).
        facts = r["facts_version"] or "unknown"
        print(
            f"{r['ref']:<{width}}  {'*' if r['active'] else '':^6}  {_cell(r['rank']):>4}  "
            f"{_cell(r['train_loss']):<6}  {_cell(r['val_loss']):<6}  {facts:<7}  "
            f"{r['created_at'][:19]}"
        )
    return 0


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def activate_command(args: argparse.Namespace) -> int:
    from mondrian.cli import vllm_cmd
    from mondrian.training.registry import activate_version, resolve

    settings = settings_from(args)
    with _existing_db(settings) as db:
        if vllm_cmd.uses_vllm(settings):  # on the server first: a refusal activates nothing
            vllm_cmd.load_on_server(settings, resolve(db, args.ref))
        adapter = activate_version(db, args.ref)
    print(f"{adapter.ref} is active")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    from mondrian.training.registry import rollback_advisor

    with _existing_db(settings_from(args)) as db:
        adapter = rollback_advisor(db, args.advisor)
    print(f"{adapter.ref} is active")
    return 0


def deactivate_command(args: argparse.Namespace) -> int:
    from mondrian.training.registry import deactivate_advisor

    with open_db(settings_from(args)) as db:
        was = deactivate_advisor(db, args.advisor)
    print(f"{args.advisor} serves the base model" + (f" ({was.ref} deactivated)" if was else ""))
    return 0


def delete_command(args: argparse.Namespace) -> int:
    from mondrian.training.registry import delete_version

    settings = settings_from(args)
    with _existing_db(settings) as db:
        adapter, removed = delete_version(db, settings, args.ref)
    where = "" if removed else f" (files left at {adapter.path}: outside the adapters folder)"
    print(f"deleted {adapter.ref}{where}")
    return 0


def merge_command(args: argparse.Namespace) -> int:
    from mondrian.training.merge import merge_adapter
    from mondrian.training.registry import resolve

    with _existing_db(settings_from(args)) as db:
        adapter = resolve(db, args.ref)
    out = merge_adapter(
        adapter.path, args.out, base_model=args.model, dtype=args.dtype, force=args.force
    )
    print(out)
    return 0


def export_command(args: argparse.Namespace) -> int:
    from mondrian.training.export_mlx import export_mlx
    from mondrian.training.registry import resolve

    with _existing_db(settings_from(args)) as db:
        adapter = resolve(db, args.ref)
    out = export_mlx(
        adapter.path,
        args.out,
        base_model=args.model,
        include_base=not args.no_base,
        force=args.force,
    )
    print(out)
    return 0
