"""model_source.resolve_model: what `--model` means, settled in seconds before any
from_pretrained (a folder, a missing folder, a cached hub id, an unreachable hub)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from fake_hub import serve
from mondrian.errors import Unavailable
from mondrian.model_source import is_complete_checkpoint, looks_like_path, resolve_model

HUB_LINE = "cannot reach the Hugging Face hub"
ADVICE = "run `mondrian models pull no/such` on a connected machine, or pass --model PATH"


def closed_port_url() -> str:
    """A loopback URL nobody listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fake_checkpoint(folder: Path, shards: int = 0) -> Path:
    """The files resolve_model looks at: config.json and the weights (not loadable)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if shards:
        names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        index = {"weight_map": {f"w{i}": name for i, name in enumerate(names)}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        for name in names:
            (folder / name).write_bytes(b"weights")
    else:
        (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub allowed out (tests/conftest.py sets HF_HUB_OFFLINE=1 for the run):
    these tests' only hub is the loopback one."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_a_folder_is_itself(tmp_path):
    folder = fake_checkpoint(tmp_path / "model")
    assert resolve_model(str(folder), offline=True) == str(folder)


@pytest.mark.parametrize("name", ["/nonexistent/model", "./nope", "~/no/such/folder", "a/b/c"])
def test_a_missing_folder_says_so(name):
    with pytest.raises(Unavailable, match=r"^no model folder at "):
        resolve_model(name, offline=True)


def test_a_name_under_an_existing_folder_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo-out").mkdir()
    assert looks_like_path("demo-out/tiny-model")
    assert not looks_like_path("Qwen/Qwen2.5-VL-3B-Instruct")
    with pytest.raises(Unavailable, match=r"no model folder at .*demo-out/tiny-model"):
        resolve_model("demo-out/tiny-model", offline=True)


def test_offline_and_not_cached_is_one_line_within_seconds(tmp_path):
    start = time.perf_counter()
    with pytest.raises(Unavailable) as caught:
        resolve_model("no/such", cache_dir=tmp_path, offline=True)
    assert time.perf_counter() - start < 5
    assert caught.value.message.startswith(f"{HUB_LINE} (HF_HUB_OFFLINE is set)")
    assert caught.value.message.endswith(ADVICE)
    assert "\n" not in caught.value.message


def test_a_closed_port_is_one_line_within_seconds(tmp_path):
    url = closed_port_url()
    start = time.perf_counter()
    with pytest.raises(Unavailable) as caught:
        resolve_model("no/such", cache_dir=tmp_path, endpoint=url, offline=False)
    assert time.perf_counter() - start < 5
    assert caught.value.message.startswith(f"{HUB_LINE} ({url}: ")
    assert caught.value.message.endswith(ADVICE)


def test_a_hub_that_never_answers_times_out(tmp_path):
    # A listening socket nobody accepts on: the connection opens, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(Unavailable, match=HUB_LINE):
            resolve_model("no/such", cache_dir=tmp_path, endpoint=url, offline=False, timeout=0.5)
        assert time.perf_counter() - start < 3


def test_a_reachable_hub_leaves_the_id_to_from_pretrained(tmp_path):
    with serve("org/model", fake_checkpoint(tmp_path / "served")) as hub:
        got = resolve_model(
            "org/model", cache_dir=tmp_path / "cache", endpoint=hub.url, offline=False
        )
    assert got == "org/model"
    assert hub.requests == ["HEAD /api/models/org/model"]


def test_a_cached_model_is_its_snapshot_with_no_request(tmp_path, online):
    cache = tmp_path / "cache"
    with serve("org/model", fake_checkpoint(tmp_path / "served", shards=2)) as hub:
        pulled = snapshot_download("org/model", cache_dir=cache, endpoint=hub.url)
        before = list(hub.requests)
        got = resolve_model("org/model", cache_dir=cache, endpoint=hub.url, offline=False)
        assert hub.requests == before  # nothing asked of the hub
    assert got == pulled and is_complete_checkpoint(Path(got))
    # Offline, too: the cache is enough.
    assert resolve_model("org/model", cache_dir=cache, offline=True) == pulled


def test_an_incomplete_snapshot_is_not_cached(tmp_path, online):
    cache = tmp_path / "cache"
    with serve("org/model", fake_checkpoint(tmp_path / "served", shards=2)) as hub:
        pulled = Path(snapshot_download("org/model", cache_dir=cache, endpoint=hub.url))
    (pulled / "model-00002-of-00002.safetensors").unlink()  # as an interrupted pull leaves it
    assert not is_complete_checkpoint(pulled)
    with pytest.raises(Unavailable, match=HUB_LINE):
        resolve_model("org/model", cache_dir=cache, offline=True)


@pytest.mark.model
def test_the_transformers_backend_resolves_before_loading(monkeypatch, tmp_path, online):
    from huggingface_hub import constants

    from mondrian.backends.transformers.backend import TransformersBackend

    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(Unavailable, match=HUB_LINE):
        TransformersBackend("no/such")
    assert time.perf_counter() - start < 5
    with pytest.raises(Unavailable, match=r"^no model folder at /nonexistent/model$"):
        TransformersBackend("/nonexistent/model")


@pytest.mark.model
@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "closed-port"])
def test_analyze_with_an_unreachable_hub_is_one_line_and_exit_2(tmp_path, offline):
    """Through the real entry point: one `mondrian: error:` line, exit 2, and before any
    framework loads (create_backend resolves the model before it imports the backend's
    module): the process never imports torch."""
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (32, 24)).save(photo)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "MONDRIAN_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
    }
    env |= {"HF_HUB_OFFLINE": "1"} if offline else {"HF_ENDPOINT": closed_port_url()}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom mondrian.cli.main import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "finally:\n    print('torch imported:', 'torch' in sys.modules)\nsys.exit(rc)",
            "analyze",
            str(photo),
            "--advisor",
            "ansel",
            "--model",
            "no/such",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mondrian: error: {HUB_LINE} (") and lines[0].endswith(ADVICE)
    assert "torch imported: False" in proc.stdout


@pytest.mark.model
def test_training_resolves_its_base_model_first(tmp_path, monkeypatch, online):
    import torch
    from huggingface_hub import constants

    from mondrian.training.config import TrainConfig
    from mondrian.training.setup import load_base

    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(Unavailable, match=r"^no model folder at /nonexistent/model$"):
        load_base(TrainConfig(model="/nonexistent/model"), torch.device("cpu"))
    with pytest.raises(Unavailable, match=HUB_LINE):
        load_base(TrainConfig(model="no/such"), torch.device("cpu"))


@pytest.mark.model
def test_the_mlx_backend_resolves_before_loading(tmp_path, monkeypatch):
    pytest.importorskip("mlx_vlm")
    from huggingface_hub import constants

    from mondrian.backends.mlx.backend import MLXBackend

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # HF_HUB_OFFLINE=1: conftest
    with pytest.raises(Unavailable, match=r"^no model folder at /nonexistent/model$"):
        MLXBackend("/nonexistent/model")
    with pytest.raises(Unavailable, match=r"\(HF_HUB_OFFLINE is set\)"):
        MLXBackend("no/such", cache_dir=tmp_path / "mlx")
