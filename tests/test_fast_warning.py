"""`--fast on` (MONDRIAN_FAST=on, or the old =1) where the fast path cannot run is said on
stderr and in the log; `auto`, the default, says nothing."""

from __future__ import annotations

import logging

import pytest

from mondrian.cli import common
from mondrian.cli.main import main
from mondrian.config import fast_path_warning, load_settings


def test_the_warning_says_why():
    assert fast_path_warning(load_settings(fast=False), cuda_available=False) is None
    assert fast_path_warning(load_settings(), cuda_available=False) is None  # auto
    assert fast_path_warning(load_settings(fast=True), cuda_available=True) is None
    no_cuda = fast_path_warning(load_settings(fast=True), cuda_available=False)
    assert no_cuda is not None and "no CUDA device" in no_cuda
    on_cpu = fast_path_warning(load_settings(fast=True, device="cpu"), cuda_available=True)
    assert on_cpu is not None and "--device is cpu" in on_cpu
    on_gpu1 = fast_path_warning(load_settings(fast=True, device="cuda:1"), cuda_available=True)
    assert on_gpu1 is None


def test_serve_warns_at_start_without_cuda(monkeypatch, capsys, caplog):
    import uvicorn

    monkeypatch.setenv("MONDRIAN_FAST", "1")
    monkeypatch.setattr(common, "cuda_available", lambda: False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    with caplog.at_level(logging.WARNING, logger="mondrian.cli.common"):
        assert main(["serve", "--model", "some/model"]) == 0
    err = capsys.readouterr().err
    assert "mondrian: warning: --fast on (MONDRIAN_FAST) is ignored: no CUDA device" in err
    assert any("(MONDRIAN_FAST) is ignored" in r.getMessage() for r in caplog.records)


def test_analyze_warns_before_anything_else(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MONDRIAN_FAST", "1")
    monkeypatch.setattr(common, "cuda_available", lambda: False)
    # The photo is missing, so the command fails after reading its settings: the warning
    # must already be out by then.
    code = main(["analyze", str(tmp_path / "missing.jpg"), "--advisor", "ansel"])
    assert code != 0
    assert "(MONDRIAN_FAST) is ignored" in capsys.readouterr().err


@pytest.mark.parametrize("fast", ["0", "1", "auto", "off"])
def test_no_warning_when_off_or_on_a_gpu(monkeypatch, capsys, fast):
    import uvicorn

    monkeypatch.setenv("MONDRIAN_FAST", fast)
    monkeypatch.setattr(common, "cuda_available", lambda: True)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main(["serve", "--model", "some/model"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_commands_that_load_no_model_do_not_warn(monkeypatch, capsys):
    monkeypatch.setenv("MONDRIAN_FAST", "1")
    monkeypatch.setattr(common, "cuda_available", lambda: False)
    assert main(["advisors", "list"]) == 0
    assert "MONDRIAN_FAST" not in capsys.readouterr().err


@pytest.mark.parametrize("fast", ["on", "ON", "1", "true", "yes"])
def test_on_in_any_spelling_warns_without_cuda(monkeypatch, capsys, fast):
    import uvicorn

    monkeypatch.setenv("MONDRIAN_FAST", fast)
    monkeypatch.setattr(common, "cuda_available", lambda: False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main(["serve", "--model", "some/model"]) == 0
    assert "(MONDRIAN_FAST) is ignored" in capsys.readouterr().err


def test_the_flag_wins_over_the_environment(monkeypatch, capsys):
    import uvicorn

    monkeypatch.setenv("MONDRIAN_FAST", "on")
    monkeypatch.setattr(common, "cuda_available", lambda: False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main(["serve", "--model", "some/model", "--fast", "auto"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--model", "some/model", "--fast", "on"]) == 0
    assert "(MONDRIAN_FAST) is ignored" in capsys.readouterr().err


def test_the_values_it_takes(monkeypatch):
    from mondrian.config import FastMode
    from mondrian.errors import InvalidInput

    assert load_settings().fast is FastMode.AUTO
    for given, mode in ((True, "on"), (False, "off"), ("1", "on"), ("0", "off"), ("Off", "off")):
        assert load_settings(fast=given).fast is FastMode(mode)
    monkeypatch.setenv("MONDRIAN_FAST", "sometimes")
    with pytest.raises(InvalidInput, match="fast"):
        load_settings()
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusal: usage, exit 2
        main(["serve", "--model", "m", "--fast", "maybe"])
    assert exit_.value.code == 2
