"""`mondrian serve`: the HTTP service (FastAPI under uvicorn)."""

from __future__ import annotations

import argparse
import sys

from mondrian.cli.common import add_model_args, fraction, port, settings_from
from mondrian.config import Settings, load_settings
from mondrian.modes import MODES, POLICIES, Policy

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5100


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP service",
        description=(
            "Serve the HTTP API (POST /analyze, /jobs, GET /health, /metrics, ...; "
            "OpenAPI docs at /docs). One thread owns the model; --concurrency jobs run at "
            "once and their generations are batched; jobs live in the database under "
            "$MONDRIAN_HOME."
        ),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--mode", choices=MODES, help="mode of requests that name none (default: baseline)"
    )
    add_model_args(parser)
    parser.add_argument(
        "--model-policy",
        choices=POLICIES,
        help="base: never use adapters; fine_tuned: serve the mode asked (default); "
        "ab_test: split jobs between base and fine_tuned",
    )
    parser.add_argument(
        "--ab-split",
        type=fraction,
        metavar="F",
        help="with --model-policy ab_test: share of jobs served fine_tuned (default 0.5)",
    )
    parser.add_argument(
        "--queue-size", type=int, help="jobs that may wait before requests get 503 (default 16)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="jobs run at once, their generations batched on the model (default 1; "
        "try 32 on a GPU with MONDRIAN_FAST=1)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default info)",
    )
    parser.set_defaults(handler=run)


# Addresses that mean "every interface": no one host name to add to the allowed ones.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings from the environment and flags; the bind address is a served host."""
    settings = settings_from(args)
    extra: dict[str, object] = {}
    if args.mode:
        extra["analysis_mode"] = args.mode
    if args.host not in WILDCARD_HOSTS and args.host not in settings.allowed_hosts:
        extra["allowed_hosts"] = [*settings.allowed_hosts, args.host]
    if extra:
        settings = load_settings(**{**settings.model_dump(), **extra})
    return settings


def build(args: argparse.Namespace, settings: Settings | None = None):
    """The app `run` would serve, from the flags (no model is loaded until it starts)."""
    from pydantic import ValidationError

    from mondrian.errors import InvalidInput, field_name
    from mondrian.service.app import create_app
    from mondrian.service.options import ServiceOptions

    settings = settings or serve_settings(args)
    overrides = {
        "model_policy": args.model_policy,
        "ab_split": args.ab_split,
        "queue_size": args.queue_size,
        "concurrency": args.concurrency,
    }
    try:
        options = ServiceOptions(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # The first problem, named by its flag: the options' fields are the flags' names.
        error = exc.errors()[0]
        flag = "--" + field_name(error["loc"]).replace(".", "-").replace("_", "-")
        raise InvalidInput(f"invalid {flag}: {error['msg']}") from None
    if args.ab_split is not None and options.model_policy != Policy.AB_TEST:
        raise InvalidInput("--ab-split applies only with --model-policy ab_test")
    return create_app(settings, options=options)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from mondrian.preflight import check_port_free
    from mondrian.service.server import uvicorn_options
    from mondrian.storage.bootstrap import serving_home

    settings = serve_settings(args)
    app = build(args, settings)
    # The app's start holds the home for the server's life; trying here first turns a
    # second server on the same home into a one-line error instead of uvicorn's
    # "Application startup failed" and a traceback.
    with serving_home(settings):
        pass
    check_port_free(args.host, args.port)  # before the model loads, not after (uvicorn binds late)
    # uvicorn loads the model (the app's lifespan) before it listens: say so, and where.
    print(
        f"mondrian: starting; the model loads first, then the service listens on "
        f"http://{args.host}:{args.port} (ready when uvicorn says 'startup complete')",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, **uvicorn_options(settings)
    )
    return 0
