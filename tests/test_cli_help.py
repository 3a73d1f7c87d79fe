"""`--help` across every command: each default shown, each positional helped, each flag's
bad value refused with the flag's name (never an internal function's)."""

from __future__ import annotations

import argparse
import re

import pytest

from docs_reference import walk_commands
from mondrian.cli.common import DEVICES, default_note
from mondrian.cli.main import build_parser, main

COMMANDS = list(walk_commands(build_parser()))
# A value no typed flag accepts: not a number, not a path that exists, not a choice.
BAD = "no-such-value"


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _help(path: tuple[str, ...], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    # argparse wraps lines; the checks below read the text as one line.
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS], ids=" ".join)
def test_help_shows_every_default_that_says_something(path, capsys):
    parser = next(parser for p, parser, _ in COMMANDS if p == path)
    text = _help(path, capsys)
    for action in _options(parser):
        if not action.option_strings:
            assert action.help, f"{' '.join(path)}: positional {action.dest} has no help"
            continue
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS:
            continue
        assert "default" in (action.help or "") + default_note(action), action.dest
        if "default" not in (action.help or ""):
            shown = " ".join(f"(default {default})".split())
            assert shown in text, f"{' '.join(path)} {action.option_strings}: {text}"


def test_no_help_spells_its_default_twice():
    # A help that names its default itself gets no second one from the formatter.
    for path, parser, _ in COMMANDS:
        for action in _options(parser):
            text = (action.help or "") + default_note(action)
            assert text.count("(default") <= 1, f"{' '.join(path)} {action.dest}: {text}"


def test_device_is_a_choice_everywhere():
    flags = [
        (path, action)
        for path, parser, _ in COMMANDS
        for action in _options(parser)
        if "--device" in action.option_strings
    ]
    assert flags, "no command has --device"
    for path, action in flags:
        assert tuple(action.choices or ()) == DEVICES, path


def test_device_tpu_is_a_choices_error_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--device", "tpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device: invalid choice: 'tpu'" in err and "Traceback" not in err


def _typed_flags() -> list[tuple[tuple[str, ...], argparse.Action]]:
    return [
        (path, action)
        for path, parser, _ in COMMANDS
        for action in _options(parser)
        if action.option_strings
        and action.nargs != 0
        and callable(action.type)
        # a string or path flag accepts any text; only typed values can be bad
        and action.type not in (str,)
        and getattr(action.type, "__name__", "") != "Path"
    ]


@pytest.mark.parametrize(
    ("path", "action"),
    _typed_flags(),
    ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, a in _typed_flags()],
)
def test_a_bad_value_names_the_flag_and_no_internal_function(path, action, capsys):
    required = _required_args(path)
    with pytest.raises(SystemExit) as exit_info:
        main([*path, *required, action.option_strings[-1], BAD])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    flag = action.option_strings[-1]
    assert f"argument {'/'.join(action.option_strings)}:" in err or f"argument {flag}:" in err, err
    assert not re.search(r"invalid _\w+ value", err), err
    assert "Traceback" not in err


def _required_args(path: tuple[str, ...]) -> list[str]:
    # Positionals get a placeholder so that argparse reaches the bad flag.
    parser = next(parser for p, parser, _ in COMMANDS if p == path)
    return [
        "x"
        for action in _options(parser)
        if not action.option_strings and action.nargs not in ("?", "*")
    ]


def test_port_messages_read_as_the_flag_s(capsys):
    for value, fragment in (("x", "'x'"), ("70000", "'70000'"), ("0", "'0'")):
        with pytest.raises(SystemExit):
            main(["serve", "--port", value])
        err = capsys.readouterr().err
        assert f"argument --port: not a TCP port (1-65535): {fragment}" in err, err


def test_demo_on_mlx_without_the_extra_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "mlx_vlm", None)  # as if the mlx extra were missing
    workdir = tmp_path / "demo"
    assert main(["demo", "--backend", "mlx", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "--backend mlx needs the 'mlx' extra" in err and "make demo-mlx" in err
    assert not workdir.exists()
