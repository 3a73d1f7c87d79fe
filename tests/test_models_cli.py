"""`mondrian models pull` against a loopback fake hub (tests/fake_hub.py) serving a tiny
checkpoint, `models list`, and the cost table that `--help` and docs/models.md show."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fake_hub import serve
from mondrian.cli import model_facts
from mondrian.cli.main import build_parser, main
from mondrian.config import DEFAULT_MODEL

ROOT = Path(__file__).parents[1]
REPO = "tiny/qwen-vl"


def hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the CLI: its own HF cache and state, online unless said."""
    dropped = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env |= {
        "HF_HOME": str(tmp_path / "hf"),
        "MONDRIAN_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src"),
        # Short strings keep a tiny model's constrained critique quick.
        "MONDRIAN_MAX_TEXT_CHARS": "24",
        "MONDRIAN_MAX_LIST_ITEMS": "2",
    }
    return env | extra


def mondrian(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mondrian", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.model
def test_pull_then_list_then_load_offline(tmp_path, tiny_model):
    with serve(REPO, tiny_model) as hub:
        env = hub_env(tmp_path, HF_ENDPOINT=hub.url)
        pulled = mondrian(env, "models", "pull", REPO)
        assert pulled.returncode == 0, pulled.stderr
        # huggingface_hub's own progress bar, on stderr.
        assert re.search(r"Fetching \d+ files: 100%", pulled.stderr), pulled.stderr
        snapshot = Path(pulled.stdout.splitlines()[0])
        assert snapshot.is_relative_to(tmp_path / "hf" / "hub")
        served = {p.name for p in tiny_model.iterdir()}
        assert {p.name for p in snapshot.iterdir()} == served
        assert f"load it with --model {REPO}" in pulled.stdout

        listed = mondrian(env, "models", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        size = sum(p.stat().st_size for p in tiny_model.iterdir())
        assert row["model"] == REPO and row["complete"] and row["bytes"] == size
        assert row["path"] == str(snapshot)
        text = mondrian(env, "models", "list").stdout
        assert REPO in text and f"{size / 1e6:.1f} MB" in text

        # Loads by its id with the hub off, and asks the (still running) hub nothing.
        asked = len(hub.requests)
        photo = tmp_path / "photo.jpg"
        Image.new("RGB", (96, 72), (180, 120, 60)).save(photo)
        analyzed = mondrian(
            env | {"HF_HUB_OFFLINE": "1"},
            *("analyze", str(photo), "--advisor", "ansel", "--model", REPO),
            *("--json", "--no-progress"),
        )
        assert analyzed.returncode == 0, analyzed.stderr
        assert json.loads(analyzed.stdout)["model"]["base"] == REPO
        assert len(hub.requests) == asked


def test_pull_an_id_the_hub_does_not_have(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "config.json").write_text("{}")
    with serve("someone/else", served) as hub:
        proc = mondrian(hub_env(tmp_path, HF_ENDPOINT=hub.url), "models", "pull", REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"mondrian: error: no model {REPO} on the Hugging Face hub "
        "(a private one needs `hf auth login`)"
    )


def test_pull_refuses_a_repo_without_weights(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "config.json").write_text("{}")
    (served / "README.md").write_text("not pulled: not a checkpoint file")
    with serve(REPO, served) as hub:
        proc = mondrian(hub_env(tmp_path, HF_ENDPOINT=hub.url), "models", "pull", REPO)
        assert not any(r.endswith("README.md") for r in hub.requests)
    assert proc.returncode == 2
    assert "no config.json or no safetensors weights" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_ENDPOINT": "closed"}, "cannot reach the Hugging Face hub"),
    ],
    ids=["offline", "closed-port"],
)
def test_pull_without_a_hub_is_one_line_and_exit_2(tmp_path, extra, message):
    if extra.get("HF_ENDPOINT") == "closed":
        extra = {"HF_ENDPOINT": closed_port_url()}
    proc = mondrian(hub_env(tmp_path, **extra), "models", "pull")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert DEFAULT_MODEL in lines[0] or "HF_HUB_OFFLINE" in lines[0]


def test_pull_a_folder_is_a_usage_error(capsys):
    assert main(["models", "pull", "./my-model"]) == 2
    assert "not a hub id" in capsys.readouterr().err


def test_list_with_no_cache_and_the_demos_tiny_checkpoint(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["models", "list"]) == 0
    assert "no models yet" in capsys.readouterr().out
    tiny = tmp_path / "demo-out" / "tiny-model"
    tiny.mkdir(parents=True)
    (tiny / "mondrian_tiny.json").write_text('{"arch": "qwen2_5_vl"}')
    (tiny / "model.safetensors").write_bytes(b"x" * 2500)
    assert main(["models", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == "demo-out/tiny-model" and row["bytes"] == 2500 + 22
    assert "tiny qwen2_5_vl" in row["source"]


# --- what the default model costs ---------------------------------------------------------


def test_the_help_names_the_model_its_size_memory_and_speed():
    parser = build_parser()
    models = parser._subparsers._group_actions[0].choices["models"]
    for text in (parser.format_help(), models.format_help()):
        assert model_facts.cost_table() in text
        for needed in (DEFAULT_MODEL, "Download ~7.5 GB", "CPU", "CUDA", "Mac (MPS)", "Mac (MLX)"):
            assert needed in text


def test_the_figures_are_computed_as_stated():
    assert model_facts.DOWNLOAD_BYTES == 3.75e9 * 2
    assert model_facts.platform("CPU").memory_bytes == 3.75e9 * 4 + 2e9
    for name in ("CUDA", "Mac (MPS)", "Mac (MLX)"):
        assert model_facts.platform(name).memory_bytes == 3.75e9 * 2 + 2e9
    # Speeds are measured, in the cited run, or said to be not measured.
    bench = (ROOT / model_facts.BENCH_RUN).read_text(encoding="utf-8")
    for p in model_facts.PLATFORMS:
        figures = re.findall(r"\d+\.\d+", p.speed)
        assert figures or p.speed == "not measured", p
        for figure in figures:
            assert f"| {figure} |" in bench, figure


def test_docs_models_md_holds_the_same_table():
    doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- the cost table.*?-->\n```text\n(.*?)\n```", doc, re.S)
    assert block is not None and block.group(1) == model_facts.cost_table()
