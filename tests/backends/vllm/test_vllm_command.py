"""`mondrian vllm-command`, `--backend vllm` set-up errors, and the settings it reads."""

from __future__ import annotations

import json
import shlex

import pytest

from mondrian.backends.protocol import create_backend
from mondrian.backends.vllm.command import ServedAdapter, ServeOptions, serve_args
from mondrian.cli.main import main
from mondrian.config import load_settings
from mondrian.errors import InvalidInput
from mondrian.storage import adapters as store


def _adapter_dir(folder, rank):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    return folder


def _flags(line: str) -> list[str]:
    return shlex.split(line)


def test_the_command_fits_mondrian_and_the_registrys_active_adapters(db, tmp_path, capsys):
    one = _adapter_dir(tmp_path / "a1", 4)
    two = _adapter_dir(tmp_path / "a2", 24)
    old = _adapter_dir(tmp_path / "a0", 64)

    def register(conn):
        store.register_adapter(conn, "ansel", old, "m")  # v1, left inactive
        store.activate(conn, "ansel", store.register_adapter(conn, "ansel", one, "m"))
        store.activate(conn, "weston", store.register_adapter(conn, "weston", two, "m"))

    db.write(register)
    db.close()
    assert main(["vllm-command", "--model", "Qwen/Qwen2.5-VL-7B-Instruct"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve ")
    args = _flags(line)[3:]
    assert args[0] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"image": 1, "video": 0}
    outputs = json.loads(args[args.index("--structured-outputs-config") + 1])
    assert outputs == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert args[args.index("--generation-config") + 1] == "vllm"
    assert args[args.index("--max-lora-rank") + 1] == "32"  # 24 rounded up to vLLM's values
    assert args[args.index("--max-loras") + 1] == "2"
    modules = args[args.index("--lora-modules") + 1 :]
    assert modules == [f"ansel@v2={one}", f"weston@v1={two}"]
    assert "--tensor-parallel-size" not in args and "--data-parallel-size" not in args


def test_parallel_flags_only_when_asked(capsys):
    assert main(["vllm-command", "--model", "m", "--tensor-parallel-size", "4",
                 "--data-parallel-size", "2", "--no-runtime-lora"]) == 0  # fmt: skip
    line = capsys.readouterr().out.strip()
    assert line.startswith("vllm serve m ") and "VLLM_ALLOW" not in line
    args = _flags(line)
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[args.index("--data-parallel-size") + 1] == "2"
    assert "--enable-lora" not in args  # no adapters, no runtime loading: no LoRA room


def test_serve_args_round_trip_every_option(tmp_path):
    options = ServeOptions(
        model="/m",
        served_name="tiny",
        adapters=[ServedAdapter("ansel@v1", tmp_path, 4)],
        dtype="float32",
        max_model_len=16384,
        host="127.0.0.1",
        port=8000,
        extra=["--max-num-seqs", "4"],
    )
    args = serve_args(options)
    assert args[:3] == ["/m", "--served-model-name", "tiny"]
    assert args[-2:] == ["--max-num-seqs", "4"]
    for flag, value in (("--dtype", "float32"), ("--max-lora-rank", "8"), ("--port", "8000")):
        assert args[args.index(flag) + 1] == value


def test_the_vllm_backend_needs_a_url():
    with pytest.raises(InvalidInput, match="--vllm-url URL or MONDRIAN_VLLM_URL"):
        create_backend(load_settings(backend="vllm"))


def test_device_and_dtype_are_the_servers_and_refused_here(monkeypatch):
    monkeypatch.setenv("MONDRIAN_VLLM_URL", "http://127.0.0.1:9")
    with pytest.raises(InvalidInput, match="--device cpu does not apply to the vllm backend"):
        create_backend(load_settings(backend="vllm", device="cpu"))


def test_an_unreachable_server_is_one_line_on_the_command_line(tmp_path, capsys, photos_dir):
    from serve_process import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    photo = str(photos_dir / "chelsea.jpg")
    code = main(["analyze", photo, "--advisor", "ansel", "--backend", "vllm", "--vllm-url", url])
    err = capsys.readouterr().err
    assert code == 2 and f"the vLLM server at {url} cannot be reached" in err
    assert "Traceback" not in err
