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


def test_new_writes_a_template_that_add_accepts_once_filled(tmp_path, capsys, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    assert main(["advisors", "new", "weegee"]) == 0
    assert "fill in" in capsys.readouterr().out
    path = tmp_path / "weegee.toml"
    # As written, add refuses it and names the placeholders, and nothing is stored.
    assert main(["advisors", "add", str(path)]) == 2
    err = capsys.readouterr().err
    assert "placeholder" in err and "field 'voice_prompt'" in err
    path.write_text(re.sub(r'"FILL IN: [^"]*"', '"Arthur Fellig"', path.read_text()))
    assert main(["advisors", "add", str(path)]) == 0
    assert "added advisor weegee (Arthur Fellig)" in capsys.readouterr().out
    assert main(["advisors", "show", "weegee", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "Arthur Fellig"


def test_new_keeps_an_existing_file_and_prints_with_dash(tmp_path, capsys):
    out = tmp_path / "mine.toml"
    out.write_text("# mine\n")
    assert main(["advisors", "new", "weegee", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "# mine\n"
    assert main(["advisors", "new", "weegee", "--out", "-"]) == 0
    assert 'id = "weegee"' in capsys.readouterr().out


def test_new_refuses_a_bad_id(tmp_path, capsys):
    assert main(["advisors", "new", "Not An Id", "--out", str(tmp_path / "x.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mondrian: error: invalid advisor id") and "\n" not in err.strip()
    assert not (tmp_path / "x.toml").exists()


def test_add_reports_every_invalid_field(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"id": "ok_id", "name": "X"}))
    assert main(["advisors", "add", str(path)]) == 2
    err = capsys.readouterr().err
    for name in ("years", "bio", "sources", "philosophy", "techniques", "voice_prompt", "weights"):
        assert f"field '{name}'" in err, name
    assert "more)" not in err
