"""`mondrian vllm-command`: the `vllm serve` command that fits this registry (docs/vllm.md),
and what `mondrian adapters activate` does with the vllm backend: the version is loaded
on the server before it is made active (or the flag the server needs is printed)."""

from __future__ import annotations

import argparse
import sys

from mondrian.cli.common import positive_int, read_db, settings_from
from mondrian.config import Settings
from mondrian.errors import Unavailable
from mondrian.storage.adapters import Adapter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vllm-command",
        help="print the `vllm serve` command for the vllm backend",
        description=(
            "Print the `vllm serve` command that serves MODEL for Mondrian: one image per "
            "prompt, the structured-outputs config the generation schema needs, greedy "
            "decoding whatever the checkpoint's generation_config says, and LoRA room for "
            "the active adapter versions (named advisor@vN, as the registry names them)."
        ),
    )
    parser.add_argument("--model", required=True, help="hub id or folder the server loads")
    parser.add_argument("--served-model-name", metavar="NAME", help="the name clients use")
    parser.add_argument(
        "--tensor-parallel-size", type=positive_int, metavar="N", help="GPUs per model copy"
    )
    parser.add_argument("--data-parallel-size", type=positive_int, metavar="N", help="model copies")
    parser.add_argument("--dtype", help="the server's dtype (float32 on a CPU build)")
    parser.add_argument("--max-loras", type=positive_int, metavar="N", help="LoRAs per batch")
    parser.add_argument("--port", type=positive_int, help="the server's port")
    parser.add_argument(
        "--no-runtime-lora",
        action="store_true",
        help=f"leave {'VLLM_ALLOW_RUNTIME_LORA_UPDATING'} off: adapters only as --lora-modules",
    )
    parser.set_defaults(handler=command)


def active_adapters(settings: Settings) -> list[Adapter]:
    from mondrian.storage import adapters as store

    with read_db(settings) as db, db.read() as conn:
        return [a for a in store.list_adapters(conn) if a.active]


def command(args: argparse.Namespace) -> int:
    from mondrian.backends.vllm.adapters import adapter_rank
    from mondrian.backends.vllm.command import ServedAdapter, ServeOptions, shell_command

    served = [
        ServedAdapter(a.ref, a.path, adapter_rank(a.path))
        for a in active_adapters(settings_from(args))
        if a.path.is_dir()
    ]
    options = ServeOptions(
        model=args.model,
        served_name=args.served_model_name,
        adapters=served,
        max_loras=args.max_loras,
        tensor_parallel=args.tensor_parallel_size,
        data_parallel=args.data_parallel_size,
        dtype=args.dtype,
        port=args.port,
        runtime_lora=not args.no_runtime_lora,
    )
    print(shell_command(options))
    return 0


# --- `mondrian adapters activate` with the vllm backend --------------------------------------


def uses_vllm(settings: Settings) -> bool:
    """Whether activation goes through a vLLM server: the vllm backend, or --vllm-url."""
    return settings.backend == "vllm" or ("vllm_url" in settings.model_fields_set)


def load_on_server(settings: Settings, adapter: Adapter) -> None:
    """Load `adapter` on the configured vLLM server under its ref, before activation: a base
    mismatch or a rank the server cannot take refuses the activation; a server that loads
    nothing at run time gets the flag it needs printed, and the activation goes ahead (the
    server takes the version once restarted with it)."""
    from mondrian.backends.protocol import create_backend

    backend = create_backend(settings.model_copy(update={"backend": "vllm"}))
    try:
        backend.load_adapter(adapter.ref, adapter.path)
    except Unavailable as exc:
        if exc.code != "adapter_not_on_server":
            raise
        print(f"mondrian: note: {exc.message}", file=sys.stderr)
        return
    print(f"{adapter.ref} is loaded on the vLLM server at {settings.vllm_url}")
