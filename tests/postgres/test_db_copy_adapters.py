"""`mondrian db copy` with adapter versions, against a real PostgreSQL.

With `--shared-dir` each version's folder moves to `DIR/adapters/<advisor>/vN` and its row
names it there: a server on the PostgreSQL URL and the shared folder serves a `lora` job
with the copied version after the old home's adapters are gone. Without it, one line says
where the rows still point. A damaged version, or a different folder already at the
target, stops the copy before any row is written; the same folder from an earlier,
failed attempt is kept.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from mondrian.cli.main import main
from mondrian.config import LOOPBACK_HOSTS, Settings, load_settings
from mondrian.storage import adapters as adapter_store
from mondrian.storage.bootstrap import open_state
from mondrian.storage.copy_adapters import STAGING_PREFIX, tree_hashes
from mondrian.storage.postgres import PostgresDatabase
from mondrian.training import registry

pytestmark = pytest.mark.postgres

PHOTO = (Path(__file__).resolve().parents[1] / "assets" / "photos" / "chelsea.jpg").read_bytes()


def _fake_lora(folder: Path) -> Path:
    """The smallest folder adapter_format.verify_dir accepts (no framework needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1}))
    header = json.dumps(
        {"m.lora_A.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    ).encode()
    weights = struct.pack("<Q", len(header)) + header + b"\x00\x00\x80\x3f"
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def _publish(settings: Settings, template: Path, base_model: str, n: int = 1) -> list[Path]:
    """`n` versions of ansel published into the SQLite state from `template`."""
    with open_state(settings) as db:
        for _ in range(n):
            staging = registry.new_staging_dir(settings, "ansel")
            shutil.copytree(template, staging, dirs_exist_ok=True)
            registry.publish(db, settings, "ansel", staging, base_model, {"n": 1})
        return [a.path for a in registry.list_versions(db, "ansel")]


def _adapter_rows(url: str) -> list[adapter_store.Adapter]:
    with PostgresDatabase(url) as db, db.read() as conn:
        return adapter_store.list_adapters(conn)


def test_the_prefix_is_the_registrys(tmp_path):
    # The service's start sweeps adapter stages by the registry's prefix.
    assert STAGING_PREFIX == registry.STAGING_PREFIX


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_a_published_version_moves_and_serves_from_the_shared_folder(
    pg_server, tiny_model, random_adapter_factory, tmp_path, capsys
):
    from fastapi.testclient import TestClient

    from mondrian.backends.protocol import create_backend
    from mondrian.service.app import create_app

    replica = Settings(
        home=tmp_path / "replica",
        model=str(tiny_model),
        backend="transformers",
        device="cpu",
        allowed_hosts=[*LOOPBACK_HOSTS, "testserver"],
        database_url=pg_server.fresh_database(),
        shared_dir=tmp_path / "shared",
    )
    # Its own backend: the adapter stays resident, and the session's `backend` has none.
    backend = create_backend(replica, max_text_chars=8, max_list_items=1)
    template = random_adapter_factory(tiny_model, tmp_path / "adapter", 1, backend.fingerprint)
    settings = load_settings()
    (old,) = _publish(settings, template, str(tiny_model))
    hashes = tree_hashes(old)
    url = replica.database_url.get_secret_value()

    assert main(["db", "copy", "--to", url, "--shared-dir", str(replica.shared_dir)]) == 0
    out = capsys.readouterr().out
    new = replica.shared_dir.absolute() / "adapters" / "ansel" / "v1"
    assert "  adapters: 1 versions, every file's sha256 equal, verified" in out, out
    assert "ansel@v1" in out and f"files copied -> {new}" in out, out
    assert f"set MONDRIAN_DATABASE_URL and MONDRIAN_SHARED_DIR={replica.shared_dir} to" in out
    (row,) = _adapter_rows(url)
    assert row.path == new and row.active and tree_hashes(new) == hashes
    registry.verify_adapter_dir(row.path)
    assert not list((new.parent).glob(f"{STAGING_PREFIX}*")), "a stage was left behind"

    # Nothing may still read the old home's folder: the server must use the copied one.
    shutil.move(settings.adapters_dir, tmp_path / "old-adapters")
    with TestClient(create_app(replica, backend)) as client:
        files = {"image": ("a.jpg", PHOTO, "image/jpeg")}
        response = client.post("/analyze", files=files, data={"advisor": "ansel", "mode": "lora"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode_used"] == "lora" and body["model"]["adapter"] == "ansel@v1", body


def test_without_a_shared_dir_one_line_says_where_the_rows_point(pg_server, capsys):
    settings = load_settings()
    _publish(settings, _fake_lora(settings.home_dir / "lora"), "tiny", n=2)
    url = pg_server.fresh_database()
    assert main(["db", "copy", "--to", url]) == 0
    out = capsys.readouterr().out
    expected = (
        f"  adapters: 2 versions not moved: their rows still point into "
        f"{settings.adapters_dir}; every replica must see it at that path"
    )
    assert expected in out, out
    assert [a.path.parent.parent for a in _adapter_rows(url)] == [settings.adapters_dir] * 2


def test_a_damaged_version_stops_the_copy_before_any_row(pg_server, tmp_path, capsys):
    settings = load_settings()
    first, second = _publish(settings, _fake_lora(tmp_path / "lora"), "tiny", n=2)
    weights = second / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-2])  # truncated tensor data
    url, shared = pg_server.fresh_database(), tmp_path / "shared"
    assert main(["db", "copy", "--to", url, "--shared-dir", str(shared)]) == 2
    err = capsys.readouterr().err
    assert "adapter ansel@v2 cannot be copied" in err and "truncated" in err, err
    assert "mondrian adapters delete ansel@v2" in err and "Traceback" not in err
    assert not (shared / "adapters").exists(), "a version was copied before the check"
    assert _adapter_rows(url) == []
    # Once the damaged version is gone, the copy goes through.
    assert main(["adapters", "delete", "ansel@v2"]) == 0
    assert main(["db", "copy", "--to", url, "--shared-dir", str(shared)]) == 0
    assert "ansel@v1" in capsys.readouterr().out
    assert [a.path for a in _adapter_rows(url)] == [shared.absolute() / "adapters/ansel/v1"]
    assert tree_hashes(shared / "adapters/ansel/v1") == tree_hashes(first)


def test_an_existing_target_is_kept_when_equal_and_refused_when_not(pg_server, tmp_path, capsys):
    settings = load_settings()
    (old,) = _publish(settings, _fake_lora(tmp_path / "lora"), "tiny")
    shared = tmp_path / "shared"
    target = shared / "adapters" / "ansel" / "v1"
    shutil.copytree(old, target)  # as an earlier copy whose database step failed left it
    url = pg_server.fresh_database()
    assert main(["db", "copy", "--to", url, "--shared-dir", str(shared)]) == 0
    assert f"files present -> {target.absolute()}" in capsys.readouterr().out

    (target / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    assert (
        main(["db", "copy", "--to", pg_server.fresh_database(), "--shared-dir", str(shared)]) == 2
    )
    err = capsys.readouterr().err
    assert f"{target.absolute()} exists and does not hold ansel@v1's files" in err, err
    assert json.loads((target / "adapter_config.json").read_text())["r"] == 2  # not overwritten
