"""Every test gets its own MONDRIAN_HOME and runs offline; tiny checkpoints of the real
architectures are built once per session and shared (treat them as read-only)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mondrian.config import load_settings
from mondrian.storage.bootstrap import open_state
from mondrian.storage.db import Database
from mondrian.tiny.families import ARCHES, DEFAULT_ARCH, DEFAULT_VOCAB, VOCABS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs a worker per core), each worker and the processes
# it starts get their share of the cores: torch threads that outnumber the cores spin
# against each other and run several times slower. Set before anything imports torch.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(autouse=True)
def mondrian_home(tmp_path, monkeypatch):
    home = tmp_path / "mondrian-home"
    monkeypatch.setenv("MONDRIAN_HOME", str(home))
    # MONDRIAN_CONFIG too: a developer's own config file must not reach the tests.
    for name in (
        "MONDRIAN_MODEL",
        "MONDRIAN_BACKEND",
        "MONDRIAN_ANALYSIS_MODE",
        "ANALYSIS_MODE",
        "MONDRIAN_CONFIG",
        "MONDRIAN_DATABASE_URL",
        "MONDRIAN_SHARED_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL for this test session (tests/pg_server.py): skips without one
    locally, fails without one under CI=true."""
    from pg_server import serve_pg

    yield from serve_pg()


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(tmp_path_factory) -> Callable[..., Path]:
    """`factory(arch="qwen2_5_vl", seed=0, vocab="tiny") -> Path`: the checkpoint, built on
    first use and shared by the whole test run.

    Treat the directory as read-only: other tests share it.
    """
    built: dict[tuple[str, int, str], Path] = {}

    def factory(arch: str = DEFAULT_ARCH, seed: int = 0, vocab: str = DEFAULT_VOCAB) -> Path:
        key = (arch, seed, vocab)
        if key not in built:
            from mondrian.tiny.checkpoint import make_tiny

            parent = tmp_path_factory.mktemp(f"tiny-{arch}-{seed}-{vocab}")
            built[key] = make_tiny(parent / "checkpoint", arch, seed, vocab=vocab)
        return built[key]

    return factory


@pytest.fixture(params=ARCHES)
def tiny_checkpoint(request, tiny_checkpoint_factory) -> Path:
    """Each architecture's seed-0 checkpoint in turn (the test runs once per arch)."""
    return tiny_checkpoint_factory(request.param)


@pytest.fixture(params=VOCABS)
def vocab(request) -> str:
    """Each vocabulary in turn: the tiny BPE trained here, then Qwen's real one."""
    return request.param


def _make_random_adapter(base_dir: Path, out_dir: Path, seed: int, fingerprint: str | None):
    """A PEFT LoRA on the language model's linears with random A and B, so it visibly
    changes the answer; `fingerprint` goes into mondrian_adapter.json when given."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=(
            r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        ),
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    if fingerprint is not None:
        (out_dir / "mondrian_adapter.json").write_text(
            json.dumps({"base_model": str(base_dir), "base_fingerprint": fingerprint})
        )
    return out_dir


@pytest.fixture(scope="session")
def random_adapter_factory():
    """`factory(base_dir, out_dir, seed, fingerprint) -> out_dir`: a random LoRA adapter."""
    return _make_random_adapter


# --- the model and the state most use-case tests run with -------------------------------

PHOTOS = Path(__file__).resolve().parent / "assets" / "photos"


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return PHOTOS


@pytest.fixture
def photo_copies(tmp_path) -> Callable:
    """`copies(*names) -> folder` holding copies of the named asset photos."""

    def copies(*names: str) -> Path:
        folder = tmp_path / "photos"
        folder.mkdir(exist_ok=True)
        for name in names:
            shutil.copy(PHOTOS / f"{name}.jpg", folder / f"{name}.jpg")
        return folder

    return copies


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint_factory) -> Path:
    """The default tiny checkpoint (qwen2_5_vl, seed 0, tiny vocabulary)."""
    return tiny_checkpoint_factory()


@pytest.fixture(scope="session")
def backend(tiny_model):
    """A transformers backend on `tiny_model`, shared by the session: load no adapter
    into it that another test would not expect."""
    from mondrian.backends.transformers.backend import TransformersBackend

    # Short strings and lists keep a constrained answer near 300 tokens.
    return TransformersBackend(str(tiny_model), max_text_chars=24, max_list_items=2)


@pytest.fixture
def settings(mondrian_home):
    return load_settings()


@pytest.fixture
def db(settings) -> Iterator[Database]:
    database = open_state(settings)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def ctx(backend, db, settings):
    from mondrian.context import Context

    return Context(backend=backend, db=db, settings=settings)


@pytest.fixture
def ansel(db):
    from mondrian.storage import advisors

    with db.read() as conn:
        return advisors.require_advisor(conn, "ansel")
