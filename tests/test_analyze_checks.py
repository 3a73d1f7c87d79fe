"""`mondrian analyze`'s text output names each check that fired, one line each, right under
the score line (the JSON carries them as `checks`); a critique no rule questions prints none."""

from __future__ import annotations

import json

import pytest

from backend_fakes import ScriptedBackend
from mondrian.backends import protocol as backend_registry
from mondrian.cli import main as cli_main
from mondrian.schema import Critique, example_critique
from test_grounding import blown_photo, strong_critique

pytestmark = pytest.mark.model


def weak_critique() -> Critique:
    """Every dimension 3: no rule's score condition holds, so nothing fires."""
    data = example_critique().model_dump()
    for dim in data["dimensions"].values():
        dim["score"] = 3
    return Critique.model_validate(data)


@pytest.fixture
def blown_file(tmp_path):
    path = tmp_path / "blown.png"
    path.write_bytes(blown_photo().data)
    return path


def _analyze(monkeypatch, backend, script, *argv: str) -> int:
    scripted = ScriptedBackend(backend, script)
    monkeypatch.setattr(backend_registry, "create_backend", lambda settings, **_: scripted)
    return cli_main.main(["analyze", *argv, "--advisor", "ansel", "--no-progress"])


def test_each_fired_check_is_a_line_under_the_score(
    monkeypatch, backend, blown_file, tmp_path, capsys
):
    out = str(tmp_path / "reports")
    assert _analyze(monkeypatch, backend, strong_critique, str(blown_file), "--out", out) == 0
    lines = capsys.readouterr().out.splitlines()
    (score,) = [i for i, line in enumerate(lines) if line.startswith("Overall ")]
    checks = []
    for line in lines[score + 1 :]:
        if not line.startswith("  check: "):
            break
        checks.append(line.removeprefix("  check: "))
    assert any("clipped white" in message for message in checks), lines
    assert lines[score + 1 + len(checks)] == ""  # then the description, as before

    assert _analyze(monkeypatch, backend, strong_critique, str(blown_file), "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["message"] for c in result["checks"]] == checks


def test_a_critique_no_rule_questions_prints_no_check(
    monkeypatch, backend, blown_file, tmp_path, capsys
):
    out = str(tmp_path / "reports")
    assert _analyze(monkeypatch, backend, weak_critique, str(blown_file), "--out", out) == 0
    printed = capsys.readouterr().out
    assert "check:" not in printed and "Overall " in printed


def test_several_photos_count_their_checks_on_each_photo_line(
    monkeypatch, backend, blown_file, photos_dir, tmp_path, capsys
):
    out = str(tmp_path / "reports")
    other = str(photos_dir / "chelsea.jpg")
    argv = (str(blown_file), other, "--out", out)
    assert _analyze(monkeypatch, backend, strong_critique, *argv) == 0
    (blown,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("blown")]
    assert " checks)" in blown or " check)" in blown
