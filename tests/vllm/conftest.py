"""The `vllm` suite's server: one real vLLM CPU server for the session, on the default tiny
checkpoint, started with `mondrian vllm-command`'s arguments (backends/vllm/command.py)
and two adapters trained by Mondrian's own pipeline (trained_adapters.py): `tester@v1`
as a static --lora-modules entry, `tester@v2` left for runtime loading. Skipped, with the
reason, without the vLLM venv (VLLM_VENV; `make test-vllm` builds it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from trained_adapters import TrainedAdapters, train_two_versions
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
def trained(vllm_python, tiny_model, tmp_path_factory) -> TrainedAdapters:
    """`tester@v1` (active) and `tester@v2`, trained and published in a home of their own
    (after the venv check: without a server there is nothing to train them for)."""
    made = train_two_versions(tiny_model, tmp_path_factory.mktemp("vllm-trained"))
    print(f"\ntwo adapters trained and published in {made.seconds:.1f} s")
    return made


@pytest.fixture(scope="session")
def adapters(trained) -> dict[str, Path]:
    """ref -> the registry's folder of that version, which the server reads."""
    return trained.paths


@pytest.fixture(scope="session")
def trained_backend(tiny_model, adapters):
    """A transformers backend on the server's checkpoint with both versions loaded: what
    the server answers with an adapter is compared with what it answers here."""
    from mondrian.backends.transformers.backend import TransformersBackend

    local = TransformersBackend(
        str(tiny_model), max_text_chars=TEXT_CHARS, max_list_items=LIST_ITEMS
    )
    for ref, path in adapters.items():
        local.load_adapter(ref, path)
    return local


@pytest.fixture(scope="session")
def vllm_server(vllm_python, tiny_model, adapters, tmp_path_factory) -> Iterator[VLLMServer]:
    from serve_process import free_port

    static = adapters["tester@v1"]
    options = ServeOptions(
        model=str(tiny_model),
        served_name="tiny",
        adapters=[ServedAdapter("tester@v1", static, adapter_rank(static))],
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
