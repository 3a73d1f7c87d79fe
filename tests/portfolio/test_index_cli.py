"""`mondrian index` through the CLI entry point, on the session's tiny model."""

from __future__ import annotations

import pytest

from mondrian.backends import protocol as backend_registry
from mondrian.cli import main as cli_main
from mondrian.config import load_settings
from mondrian.errors import Unavailable
from mondrian.storage import profiles
from mondrian.storage.bootstrap import open_state

pytestmark = pytest.mark.model


@pytest.fixture
def cli(monkeypatch, backend):
    """`cli(*argv) -> exit code`, with the tiny backend served instead of loading one."""
    created = []

    def create_backend(settings, **options):
        created.append(settings.model)
        return backend

    monkeypatch.setattr(backend_registry, "create_backend", create_backend)

    def run(*argv: str) -> int:
        return cli_main.main(["index", *argv, "--no-progress"])

    run.created = created
    return run


def _profile_count(advisor_id: str) -> int:
    with open_state(load_settings()) as db, db.read() as conn:
        return profiles.count_profiles(conn, advisor_id)


def test_index_reports_unreadable_files_and_exits_zero(cli, photo_copies, capsys):
    folder = photo_copies("chelsea", "coffee")
    (folder / "broken.jpg").write_bytes(b"GIF89a but not really")

    code = cli("--advisor", "fan_ho", str(folder))

    out = capsys.readouterr().out
    assert code == 0
    assert "fan_ho: indexed 2, skipped 0 already indexed, 1 unreadable" in out
    assert f"unreadable: {folder / 'broken.jpg'}:" in out
    assert _profile_count("fan_ho") == 2

    # Again: all indexed already, so no model is even loaded.
    cli.created.clear()
    assert cli("--advisor", "fan_ho", str(folder / "chelsea.jpg"), str(folder / "coffee.jpg")) == 0
    assert "indexed 0, skipped 2 already indexed, 0 unreadable" in capsys.readouterr().out
    assert cli.created == []


def test_index_exits_two_when_nothing_is_readable_or_the_advisor_is_unknown(
    cli, tmp_path, photo_copies, capsys
):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("text, not an image")
    (junk / "b.png").write_bytes(b"")

    assert cli("--advisor", "ansel", str(junk)) == 2
    out = capsys.readouterr().out
    assert "indexed 0, skipped 0 already indexed, 2 unreadable" in out

    assert cli("--advisor", "nobody", str(photo_copies("rocket"))) == 2
    assert "nobody" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("--advisor", "ansel", str(empty)) == 2
    assert "no image files" in capsys.readouterr().err


def test_index_exits_two_when_the_model_cannot_load(monkeypatch, photo_copies, capsys):
    def broken(settings, **options):
        raise Unavailable("cannot load model 'nowhere'")

    monkeypatch.setattr(backend_registry, "create_backend", broken)
    argv = ["index", "--advisor", "ansel", str(photo_copies("rocket")), "--no-progress"]
    assert cli_main.main(argv) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_analyze_uses_the_indexed_portfolio_and_says_it_fell_back(
    cli, photo_copies, photos_dir, tmp_path, monkeypatch, capsys
):
    import json

    assert cli("--advisor", "ansel", str(photo_copies("coffee", "rocket"))) == 0
    capsys.readouterr()
    monkeypatch.setenv("ANALYSIS_MODE", "lora")  # the default mode, from the environment
    argv = ["analyze", str(photos_dir / "chelsea.jpg"), "--advisor", "ansel", "--json"]
    argv += ["--out", str(tmp_path / "reports"), "--no-progress"]

    assert cli_main.main(argv) == 0

    result = json.loads(capsys.readouterr().out)
    assert (result["mode_requested"], result["mode_used"]) == ("lora", "rag")
    assert [r["title"] for r in result["references"]] in (
        ["coffee", "rocket"],
        ["rocket", "coffee"],
    )
    assert result["model"]["adapter"] is None
