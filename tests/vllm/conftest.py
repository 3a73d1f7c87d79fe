"""The `vllm` suite's server: one real vLLM CPU server for the session, on the default tiny
checkpoint, started with `mondrian vllm-command`'s arguments (backends/vllm/command.py)
and two adapters: `ansel@v1` as a static --lora-modules entry, `ansel@v2` left for
runtime loading. Skipped, with the reason, without the vLLM venv (VLLM_VENV; `make
test-vllm` builds it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_server import VLLMServer, venv_python

from mondrian.backends.vllm.adapters import adapter_rank
from mondrian.backends.vllm.command import ServedAdapter, ServeOptions

TEXT_CHARS, LIST_ITEMS = 24, 2  # as tests/conftest.py's `backend`: answers can be compared


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    python = venv_python()
    if python is None:
        pytest.skip(
            "no vLLM venv: set VLLM_VENV to one built by `make vllm-venv` (make test-vllm does)"
        )
    return python


@pytest.fixture(scope="session")
def adapters(tiny_model, backend, tmp_path_factory, random_adapter_factory) -> dict[str, Path]:
    """Two LoRA adapters on the tiny model (random weights that change its answers), with
    their base recorded as training records it; readable by the server's user."""
    folder = tmp_path_factory.mktemp("vllm-adapters")
    made = {
        ref: random_adapter_factory(tiny_model, folder / ref, seed, backend.fingerprint)
        for ref, seed in (("ansel@v1", 1), ("ansel@v2", 2))
    }
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return made


@pytest.fixture(scope="session")
def vllm_server(vllm_python, tiny_model, adapters, tmp_path_factory) -> Iterator[VLLMServer]:
    from serve_process import free_port

    static = adapters["ansel@v1"]
    options = ServeOptions(
        model=str(tiny_model),
        served_name="tiny",
        adapters=[ServedAdapter("ansel@v1", static, adapter_rank(static))],
        max_loras=2,
        dtype="float32",  # else the CPU build runs bfloat16 and answers differ
        max_model_len=16384,
        host="127.0.0.1",
        port=free_port(),
        extra=["--max-num-seqs", "4"],
    )
    server = VLLMServer(vllm_python, options, tmp_path_factory.mktemp("vllm-log"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def vllm_backend(vllm_server):
    from mondrian.backends.vllm.backend import VLLMBackend

    backend = VLLMBackend(
        None, vllm_url=vllm_server.url, max_text_chars=TEXT_CHARS, max_list_items=LIST_ITEMS
    )
    yield backend
    backend.client.close()
