"""Adapters on a vLLM server: a registry version `advisor@vN` is a LoRA of that name there.

Before one is used, three checks, each a sentence when it fails:
- the adapter's files are complete (adapter_format.check_files);
- the base it records is the model the server serves, else the refusal names both: where
  the server loaded a folder this process can read, the weights' fingerprints
  (`mondrian_adapter.json`'s `base_fingerprint` against the folder's); else the names
  (`base_model` against `/v1/models`' name or the path it loaded), said in a log line;
- the server takes it: runtime loading (`POST /v1/load_lora_adapter`, allowed when the
  server runs with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), or, where that is off, the
  `--lora-modules` the server needs is printed in the error. A rank above the server's
  `--max-lora-rank` is said with the flag that fixes it.

The server reads the adapter's files itself, as its own user: the path must be the same
there (one host, or a shared file system); the registry writes versions readable by others.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mondrian import adapter_format
from mondrian.backends.decoding.fingerprint import folder_fingerprint
from mondrian.backends.vllm.client import VLLMClient, server_message
from mondrian.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)


def adapter_rank(path: Path) -> int:
    """The LoRA rank vLLM checks against `--max-lora-rank`: the largest in the config."""
    config = adapter_format.read_peft_config(path)
    pattern = config.get("rank_pattern") or {}
    return max([int(config.get("r") or 0), *(int(r) for r in pattern.values())])


def base_entry(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The server's base model among `/v1/models`' entries (the one without a parent)."""
    bases = [m for m in models if not m.get("parent")]
    if not bases:
        raise Unavailable("the vLLM server lists no base model at /v1/models")
    return bases[0]


def same_model(recorded: str, base: dict[str, Any]) -> bool:
    """Whether a recorded base model names the server's: its served name or its root (the
    hub id or folder it loaded; folders compared once resolved)."""
    names = {str(base.get("id")), str(base.get("root"))}
    if recorded in names:
        return True
    folders = {_folder(n) for n in names if _is_path(n)}
    return _is_path(recorded) and _folder(recorded) in folders


def _is_path(name: str) -> bool:
    return name.startswith(("/", "~", "."))


def _folder(name: str) -> str:
    return str(Path(name).expanduser().resolve())


def check_base(name: str, path: Path, base: dict[str, Any], url: str) -> None:
    """Refuse an adapter trained on another base than the server's (naming both).

    Where the server's model is a folder this process can read (one host, or a shared
    file system), its weights' fingerprint is compared with the one the adapter records
    (backends/decoding/fingerprint.py): the same weights under another name pass, other
    weights under the same name do not. Otherwise the names are compared."""
    meta = adapter_format.read_meta(path)
    recorded = meta.base_model if meta is not None else None
    fingerprint = meta.base_fingerprint if meta is not None else None
    root = str(base.get("root") or "")
    served = folder_fingerprint(Path(root).expanduser()) if _is_path(root) else None
    if fingerprint and served:
        if fingerprint != served:
            raise InvalidInput(
                f"adapter {name} was trained on base model {recorded!r} (fingerprint "
                f"{fingerprint}) but the vLLM server at {url} serves {root!r} (as "
                f"{base.get('id')!r}), whose weights' fingerprint is {served}; serve that "
                "model, or use an adapter trained on this one",
                code="base_mismatch",
            )
        return
    if fingerprint:
        log.info(
            "adapter %s: the server's model %r is not a folder readable here; comparing "
            "names, not weights' fingerprints",
            name,
            root,
        )
    if not recorded:
        log.warning("adapter %s records no base model; the server's cannot be checked", name)
        return
    if not same_model(recorded, base):
        raise InvalidInput(
            f"adapter {name} was trained on base model {recorded!r} but the vLLM server at "
            f"{url} serves {base.get('root')!r} (as {base.get('id')!r}); serve that model, "
            "or use an adapter trained on this one",
            code="base_mismatch",
        )


def lora_modules_flag(name: str, path: Path) -> str:
    return f"--lora-modules {name}={Path(path).resolve()}"


def load_on_server(client: VLLMClient, name: str, path: Path) -> None:
    """Load adapter `name` from `path` at run time, or say what the server needs."""
    response = client.load_lora(name, str(Path(path).resolve()))
    if response.status_code < 400:
        return
    message = server_message(response)
    if response.status_code in (404, 405):  # the route is not there: runtime loading is off
        raise Unavailable(
            f"the vLLM server at {client.url} does not load adapters at run time; start it "
            f"with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or with {lora_modules_flag(name, path)} "
            "(mondrian vllm-command prints the whole command)",
            code="adapter_not_on_server",
        )
    if "already" in message.lower():  # loaded meanwhile (another process, a static module)
        return
    if "rank" in message.lower():
        rank = adapter_rank(path)
        raise InvalidInput(
            f"adapter {name} has LoRA rank {rank}, above what the vLLM server at {client.url} "
            f"allows ({message}); restart the server with --max-lora-rank {_rank_flag(rank)}",
            code="adapter_rank",
        )
    raise InvalidInput(
        f"the vLLM server at {client.url} refused adapter {name} ({response.status_code}): "
        f"{message}"
    )


# vLLM accepts these values of --max-lora-rank only.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _rank_flag(rank: int) -> int:
    return next((r for r in LORA_RANKS if r >= rank), rank)
