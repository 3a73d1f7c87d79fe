"""`mondrian completion SHELL`: a script the shell accepts, naming every command."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from docs_reference import walk_commands
from mondrian.cli.main import build_parser, main

pytest.importorskip("shtab", reason="shtab is a dependency (pyproject.toml); reinstall")


def _script(shell: str, capsys) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_the_bash_script_parses_and_names_every_command(capsys):
    script = _script("bash", capsys)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=30)
    words = {word for path, _, _ in walk_commands(build_parser()) for word in path}
    missing = sorted(w for w in words if w not in script)
    assert missing == [] and len(words) > 20
    # and the flags of a command, e.g. serve's
    assert "--port" in script and "--device" in script


def test_bash_completes_the_commands_in_a_real_shell(capsys, tmp_path):
    script = tmp_path / "mondrian.bash"
    script.write_text(_script("bash", capsys))
    # Ask the completion function what follows `mondrian con` and `mondrian advisors `.
    probe = f"""
source {script}
fn=$(complete -p mondrian | sed -E 's/.* -F ([^ ]+) .*/\\1/')
COMP_WORDS=(mondrian con); COMP_CWORD=1; COMP_LINE="mondrian con"; COMP_POINT=12
$fn mondrian con mondrian; echo "top: ${{COMPREPLY[*]}}"
COMP_WORDS=(mondrian advisors ""); COMP_CWORD=2; COMP_LINE="mondrian advisors "; COMP_POINT=18
$fn mondrian "" advisors; echo "advisors: ${{COMPREPLY[*]}}"
"""
    out = subprocess.run(
        ["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    top = next(line for line in out.splitlines() if line.startswith("top:")).split()[1:]
    assert top == ["config"], out
    actions = next(line for line in out.splitlines() if line.startswith("advisors:")).split()
    assert {"list", "show", "new", "add"} <= set(actions[1:]), out


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_top_level_command(shell, capsys):
    script = _script(shell, capsys)
    commands = {path[0] for path, _, _ in walk_commands(build_parser())}
    assert sorted(c for c in commands if c not in script) == []
    if shutil.which(shell):  # the shell's own syntax check where it is installed
        subprocess.run([shell, "-n"], input=script, text=True, check=True, timeout=30)


def test_an_unknown_shell_is_a_choices_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["completion", "tcsh"])
    assert exit_info.value.code == 2
    assert "argument SHELL: invalid choice: 'tcsh'" in capsys.readouterr().err
