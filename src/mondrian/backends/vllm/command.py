"""The `vllm serve` command that fits Mondrian: what `mondrian vllm-command` prints and
the real-server tests run (tests/vllm/), so the two cannot drift apart.

What each flag is for:
- `--limit-mm-per-prompt`: one image per prompt, as Mondrian sends (no video);
- `--structured-outputs-config` with `disable_any_whitespace`: vLLM honours it only as a
  server flag; without it a weak model fills its budget with whitespace inside the JSON;
- `--generation-config vllm`: the checkpoint's generation_config.json (Qwen's Instruct ones
  sample, with repetition_penalty 1.05) must not change the greedy rule;
- `--enable-lora --max-lora-rank --max-loras --lora-modules`: the active adapter versions,
  named `advisor@vN` as in the registry; with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True a
  version activated later is loaded at run time instead;
- `--tensor-parallel-size` / `--data-parallel-size`: only when asked for.

`NVLS_OFF_ENV` keeps NVLink multicast off in a multi-GPU server's processes (its workers
inherit the environment): on a shared NVSwitch host a program that creates multicast
objects can take every GPU of the host out of service (docs/scale-out.md). It is not in
`serve_env`: elsewhere multicast is a speed-up a user may want.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mondrian.backends.vllm.adapters import LORA_RANKS

RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}
IMAGE_LIMIT = {"image": 1, "video": 0}
NVLS_OFF_ENV = {
    "NCCL_NVLS_ENABLE": "0",  # NCCL's NVLink SHARP (multicast) algorithms
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",  # PyTorch's symmetric memory
    "NVSHMEM_DISABLE_NVLS": "1",
    # vLLM's own all-reduces that would create multicast objects: its symmetric-memory
    # all-reduce, NCCL's symmetric memory, and FlashInfer's, whose single-node default
    # ("mnnvl") allocates multicast memory where NVSwitch offers it.
    "VLLM_ALLREDUCE_USE_SYMM_MEM": "0",
    "VLLM_USE_NCCL_SYMM_MEM": "0",
    "VLLM_ALLREDUCE_USE_FLASHINFER": "0",
    "VLLM_FLASHINFER_ALLREDUCE_BACKEND": "trtllm",
}


@dataclass(frozen=True)
class ServedAdapter:
    name: str  # advisor@vN
    path: Path
    rank: int


@dataclass
class ServeOptions:
    model: str
    served_name: str | None = None
    adapters: Sequence[ServedAdapter] = ()
    max_loras: int | None = None  # None: as many as the adapters (at least 1)
    tensor_parallel: int | None = None
    data_parallel: int | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    host: str | None = None
    port: int | None = None
    runtime_lora: bool = True
    extra: list[str] = field(default_factory=list)


def lora_rank_flag(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds `rank`."""
    return next((r for r in LORA_RANKS if r >= rank), rank)


def serve_args(options: ServeOptions) -> list[str]:
    """The arguments after `vllm serve` (the model first)."""
    args = [options.model]
    if options.served_name:
        args += ["--served-model-name", options.served_name]
    args += ["--limit-mm-per-prompt", json.dumps(IMAGE_LIMIT, separators=(",", ":"))]
    args += ["--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS, separators=(",", ":"))]
    args += ["--generation-config", "vllm"]
    if options.dtype:
        args += ["--dtype", options.dtype]
    if options.max_model_len:
        args += ["--max-model-len", str(options.max_model_len)]
    adapters = list(options.adapters)
    if adapters or options.runtime_lora:
        rank = max((a.rank for a in adapters), default=16)
        loras = options.max_loras or max(1, len(adapters))
        args += ["--enable-lora", "--max-lora-rank", str(lora_rank_flag(rank))]
        args += ["--max-loras", str(loras)]
        if adapters:
            args += ["--lora-modules", *(f"{a.name}={a.path}" for a in adapters)]
    if options.tensor_parallel:
        args += ["--tensor-parallel-size", str(options.tensor_parallel)]
    if options.data_parallel:
        args += ["--data-parallel-size", str(options.data_parallel)]
    if options.host:
        args += ["--host", options.host]
    if options.port:
        args += ["--port", str(options.port)]
    return args + list(options.extra)


def serve_env(options: ServeOptions) -> dict[str, str]:
    return {RUNTIME_LORA_ENV: "True"} if options.runtime_lora else {}


def shell_command(options: ServeOptions) -> str:
    """One line a shell runs: the environment, `vllm serve`, the arguments (quoted)."""
    env = [f"{k}={v}" for k, v in serve_env(options).items()]
    return " ".join([*env, shlex.join(["vllm", "serve", *serve_args(options)])])
