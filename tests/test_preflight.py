"""Cheap checks before the model loads (src/mondrian/preflight.py), through the real CLI.

Each error path asserts the message, exit 2, that `create_backend` was never called, and a
time bound far below any model load (the tiny checkpoints load in seconds; a real one in
half a minute to two)."""

from __future__ import annotations

import socket
import time

import pytest
from PIL import Image

from mondrian.cli.main import main
from mondrian.modes import Mode
from mondrian.preflight import check_port_free, plan_analysis
from mondrian.storage import adapters as adapter_store

# Generous for a loaded 2-core machine; no check here does more than read SQLite.
BOUND_S = 20.0


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if any command tries to load a model."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the check")

    monkeypatch.setattr("mondrian.backends.protocol.create_backend", refuse)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (120, 90, 60)).save(path)
    return path


def _timed(argv: list[str]) -> tuple[int, float]:
    started = time.perf_counter()
    code = main(argv)
    return code, time.perf_counter() - started


def test_analyze_unknown_advisor_fails_before_the_load(no_model, photo, capsys):
    code, elapsed = _timed(["analyze", str(photo), "--advisor", "nobody"])
    assert code == 2
    assert "no advisor 'nobody'" in capsys.readouterr().err
    assert elapsed < BOUND_S


def test_analyze_unknown_mode_is_refused_by_the_parser(no_model, photo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(photo), "--advisor", "ansel", "--mode", "magic"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_lora_without_adapter_says_the_fallback_before_the_load(monkeypatch, photo, capsys):
    # The notice must be on stderr by the time the model would load: the fake load reads it.
    seen: list[str] = []

    def load(*_args, **_kwargs):
        seen.append(capsys.readouterr().err)
        raise AssertionError("stop here: the model would load now")

    monkeypatch.setattr("mondrian.backends.protocol.create_backend", load)
    with pytest.raises(AssertionError, match="stop here"):
        main(["analyze", str(photo), "--advisor", "ansel", "--mode", "lora"])
    assert seen, "the model load was not reached"
    assert (
        "ansel: mode lora is unavailable (lora: no active adapter; rag: no indexed portfolio)"
        in seen[0]
    )
    assert "falling back to baseline" in seen[0]


def test_plan_with_an_active_adapter_expects_lora(db, tmp_path):
    version = db.write(adapter_store.register_adapter, "ansel", tmp_path, "base-model")
    db.write(adapter_store.activate, "ansel", version)
    plan = plan_analysis(db, "ansel", "lora")
    assert (plan.requested, plan.expected, plan.reasons) == (Mode.LORA, Mode.LORA, [])
    assert plan.notice() is None


def test_plan_strict_refuses_the_fallback(db):
    from mondrian.errors import Unavailable

    with pytest.raises(Unavailable, match="cannot be served in mode rag: rag: no indexed"):
        plan_analysis(db, "ansel", "rag", strict=True)
    assert plan_analysis(db, "ansel", "baseline", strict=True).notice() is None


def test_serve_on_a_port_in_use_fails_before_the_load(no_model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, elapsed = _timed(["serve", "--port", str(port)])
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
    assert elapsed < BOUND_S


def test_a_free_port_passes_the_check():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_port_free("127.0.0.1", port)  # raises nothing


def test_evaluate_unknown_advisor_fails_before_the_load(no_model, capsys):
    code, elapsed = _timed(["evaluate", "--advisor", "nobody"])
    assert code == 2
    assert "no advisor 'nobody'" in capsys.readouterr().err
    assert elapsed < BOUND_S


def test_evaluate_without_adapter_fails_before_the_load(no_model, capsys):
    code, _ = _timed(["evaluate", "--advisor", "ansel"])
    assert code == 2
    assert "ansel has no active adapter; pass --adapter" in capsys.readouterr().err


def test_evaluate_missing_dataset_fails_before_the_load(no_model, db, tmp_path, capsys):
    version = db.write(adapter_store.register_adapter, "ansel", tmp_path, "base-model")
    db.write(adapter_store.activate, "ansel", version)
    missing = tmp_path / "no-such-dataset"
    code, elapsed = _timed(["evaluate", "--advisor", "ansel", "--dataset", str(missing)])
    assert code == 2
    assert f"dataset not found: {missing}" in capsys.readouterr().err
    assert elapsed < BOUND_S


def test_evaluate_dataset_without_the_split_fails_before_the_load(no_model, db, tmp_path, capsys):
    version = db.write(adapter_store.register_adapter, "ansel", tmp_path, "base-model")
    db.write(adapter_store.activate, "ansel", version)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    code, _ = _timed(["evaluate", "--advisor", "ansel", "--dataset", str(dataset)])
    assert code == 2
    assert "no validation split" in capsys.readouterr().err


def test_index_unknown_advisor_fails_before_the_load(no_model, photo, capsys):
    code, elapsed = _timed(["index", "--advisor", "nobody", str(photo)])
    assert code == 2
    assert "no advisor 'nobody'" in capsys.readouterr().err
    assert elapsed < BOUND_S


def test_index_of_missing_files_fails_before_the_load(no_model, tmp_path, capsys):
    missing = tmp_path / "holiday" / "a.jpg"
    code, elapsed = _timed(["index", "--advisor", "ansel", str(missing)])
    assert code == 2
    assert f"no such file or folder: {missing}" in capsys.readouterr().err
    assert elapsed < BOUND_S
