"""`mondrian advisors ...` end to end through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

from mondrian.cli.main import main


def test_list_shows_the_shipped_advisors(capsys):
    assert main(["advisors", "list"]) == 0
    out = capsys.readouterr().out
    for advisor_id, name in [
        ("ansel", "Ansel Adams"),
        ("cartier_bresson", "Henri Cartier-Bresson"),
        ("fan_ho", "Fan Ho"),
    ]:
        assert advisor_id in out and name in out


def test_show_prints_bio_and_weights(capsys):
    assert main(["advisors", "show", "fan_ho", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == "fan_ho" and set(data["weights"]) >= {"lighting", "composition"}


def test_show_unknown_advisor_is_a_one_line_error(capsys):
    assert main(["advisors", "show", "nobody"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mondrian: error:") and "nobody" in err and "\n" not in err


def test_add_validates_and_stores(tmp_path, capsys):
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "mondrian", "advisors", "show", "ansel", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    data.update(id="my_mentor", name="My Mentor")
    path = tmp_path / "mentor.json"
    path.write_text(json.dumps(data))
    assert main(["advisors", "add", str(path)]) == 0
    capsys.readouterr()
    assert main(["advisors", "list"]) == 0
    assert "my_mentor" in capsys.readouterr().out


def test_add_bad_file_names_the_field(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"id": "ok_id", "name": "X"}))
    assert main(["advisors", "add", str(path)]) == 2
    assert "'years'" in capsys.readouterr().err


def test_add_refuses_to_replace_a_shipped_advisor(tmp_path, capsys):
    assert main(["advisors", "show", "ansel", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    path = tmp_path / "ansel.json"
    path.write_text(json.dumps(data))
    assert main(["advisors", "add", str(path)]) == 2
    assert "shipped advisor" in capsys.readouterr().err


def test_help_is_fast_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "mondrian", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "advisors" in out


def test_read_only_commands_create_no_state(mondrian_home, tmp_path, capsys):
    """Listing and showing on a fresh machine read the shipped advisors and write nothing
    under MONDRIAN_HOME; a command that stores (add) does create the state."""
    assert main(["advisors", "list", "--json"]) == 0
    assert "ansel" in {a["id"] for a in json.loads(capsys.readouterr().out)}
    assert main(["advisors", "show", "ansel"]) == 0
    assert "Ansel Adams" in capsys.readouterr().out
    assert main(["ab-report", "--json"]) == 0
    capsys.readouterr()
    assert main(["profiles", "export", "--advisor", "ansel", str(tmp_path / "p.jsonl")]) == 0
    assert (tmp_path / "p.jsonl").read_text() == ""
    assert not mondrian_home.exists()
    assert main(["advisors", "show", "nobody"]) == 2
    assert not mondrian_home.exists()
