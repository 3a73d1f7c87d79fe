"""The adapter registry: versions on disk and in the database kept in step; activate,
roll back, deactivate, delete; the `mondrian adapters` commands."""

from __future__ import annotations

import json
import shutil

import pytest
from training_helpers import ADVISOR, fake_adapter

from mondrian.adapter_format import ADAPTER_META
from mondrian.cli.main import main
from mondrian.errors import InvalidInput, NotFound
from mondrian.storage import adapters as store
from mondrian.training import registry


def _publish(state, settings, tmp_path, activate=None):
    staging = registry.new_staging_dir(settings, ADVISOR)
    fake_adapter(staging)
    return registry.publish(
        state, settings, ADVISOR, staging, "tiny-base", {"metrics": {}}, activate=activate
    )


def _active(state):
    with state.read() as conn:
        rows = conn.execute(
            "SELECT version FROM adapters WHERE advisor_id = ? AND active = 1", (ADVISOR,)
        ).fetchall()
    return [r[0] for r in rows]


def test_first_version_activates_later_ones_only_when_asked(state, settings, tmp_path):
    first, activated = _publish(state, settings, tmp_path)
    assert (first.ref, activated, first.active) == (f"{ADVISOR}@v1", True, True)
    assert first.path == settings.adapters_dir / ADVISOR / "v1"
    meta = registry.verify_adapter_dir(first.path)
    assert meta["ref"] == first.ref and meta["version"] == 1 and meta["base_model"] == "tiny-base"
    assert first.metadata["ref"] == first.ref

    second, activated = _publish(state, settings, tmp_path)
    assert (second.version, activated, _active(state)) == (2, False, [1])
    third, activated = _publish(state, settings, tmp_path, activate=True)
    assert (third.version, activated, _active(state)) == (3, True, [3])
    fourth, activated = _publish(state, settings, tmp_path, activate=False)
    assert (fourth.version, activated, _active(state)) == (4, False, [3])
    # Nothing left behind but the versions.
    assert sorted(p.name for p in (settings.adapters_dir / ADVISOR).iterdir()) == [
        "v1",
        "v2",
        "v3",
        "v4",
    ]


def test_an_incomplete_staging_dir_is_refused(state, settings, tmp_path):
    staging = registry.new_staging_dir(settings, ADVISOR)
    fake_adapter(staging)
    (staging / "adapter_model.safetensors").unlink()
    with pytest.raises(InvalidInput, match=r"adapter_model\.safetensors missing"):
        registry.publish(state, settings, ADVISOR, staging, "tiny-base", {})
    assert registry.list_versions(state) == []


def test_truncated_weights_are_refused(state, settings, tmp_path):
    staging = registry.new_staging_dir(settings, ADVISOR)
    fake_adapter(staging)
    weights = staging / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(InvalidInput, match="truncated"):
        registry.publish(state, settings, ADVISOR, staging, "tiny-base", {})


def test_a_failed_registration_puts_the_directory_back(state, settings, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(store, "register_adapter", boom)
    staging = registry.new_staging_dir(settings, ADVISOR)
    fake_adapter(staging)
    with pytest.raises(RuntimeError, match="went away"):
        registry.publish(state, settings, ADVISOR, staging, "tiny-base", {})
    assert staging.is_dir() and not (settings.adapters_dir / ADVISOR / "v1").exists()
    monkeypatch.undo()
    assert registry.list_versions(state) == []


def test_an_unregistered_version_dir_is_replaced(state, settings, tmp_path):
    # What a crash between the rename and the commit leaves behind.
    orphan = settings.adapters_dir / ADVISOR / "v1"
    orphan.mkdir(parents=True)
    (orphan / "half-written").write_text("x")
    adapter, _ = _publish(state, settings, tmp_path)
    assert adapter.path == orphan and not (orphan / "half-written").exists()
    registry.verify_adapter_dir(orphan)


def test_activation_refuses_a_broken_directory(state, settings, tmp_path):
    _publish(state, settings, tmp_path)
    second, _ = _publish(state, settings, tmp_path)
    (second.path / "adapter_config.json").unlink()
    with pytest.raises(InvalidInput, match="incomplete"):
        registry.activate_version(state, second.ref)
    assert _active(state) == [1]


def test_rollback_deactivate_delete(state, settings, tmp_path):
    for _ in range(3):
        _publish(state, settings, tmp_path, activate=True)
    assert registry.rollback_advisor(state, ADVISOR).version == 2
    assert _active(state) == [2]
    with pytest.raises(InvalidInput, match="is active"):
        registry.delete_version(state, settings, f"{ADVISOR}@v2")
    adapter, removed = registry.delete_version(state, settings, f"{ADVISOR}@v3")
    assert removed and not adapter.path.exists()
    with pytest.raises(NotFound):
        registry.resolve(state, f"{ADVISOR}@v3")
    # Numbers are never reused.
    assert _publish(state, settings, tmp_path)[0].version == 4
    assert registry.deactivate_advisor(state, ADVISOR).version == 2
    assert _active(state) == []
    with pytest.raises(InvalidInput, match="no active adapter"):
        registry.rollback_advisor(state, ADVISOR)


def test_delete_never_removes_files_outside_the_adapters_dir(state, settings, tmp_path):
    elsewhere = fake_adapter(tmp_path / "elsewhere")
    state.write(store.register_adapter, ADVISOR, elsewhere, "tiny-base", {})
    _, removed = registry.delete_version(state, settings, f"{ADVISOR}@v1")
    assert not removed and (elsewhere / "adapter_config.json").is_file()


def test_cli_commands(state, settings, tmp_path, capsys):
    for _ in range(2):
        _publish(state, settings, tmp_path)
    assert main(["adapters", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{ADVISOR}@v1" in out and f"{ADVISOR}@v2" in out
    assert main(["adapters", "activate", f"{ADVISOR}@v2"]) == 0
    assert capsys.readouterr().out.strip() == f"{ADVISOR}@v2 is active"
    assert main(["adapters", "list", "--advisor", ADVISOR, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["ref"], r["active"]) for r in rows] == [
        (f"{ADVISOR}@v1", False),
        (f"{ADVISOR}@v2", True),
    ]
    assert main(["adapters", "delete", f"{ADVISOR}@v2"]) == 2
    assert "is active" in capsys.readouterr().err
    assert main(["adapters", "rollback", ADVISOR]) == 0
    assert capsys.readouterr().out.strip() == f"{ADVISOR}@v1 is active"
    assert main(["adapters", "delete", f"{ADVISOR}@v2"]) == 0
    assert capsys.readouterr().out.strip() == f"deleted {ADVISOR}@v2"
    assert main(["adapters", "deactivate", ADVISOR]) == 0
    assert "serves the base model" in capsys.readouterr().out
    assert main(["adapters", "activate", "not-a-ref"]) == 2
    assert "expected advisor@vN" in capsys.readouterr().err
    shutil.rmtree(settings.adapters_dir / ADVISOR / "v1")
    assert main(["adapters", "activate", f"{ADVISOR}@v1"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture
def umask_022():
    """The usual umask, whatever the test runner's is (os.umask is process-wide, so it
    is put back at once)."""
    import os

    before = os.umask(0o022)
    yield
    os.umask(before)


def _modes(root):
    """{relative path: mode} of a folder and everything in it."""
    import stat

    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_a_published_version_is_readable_by_other_users(umask_022, state, settings, tmp_path):
    staging = registry.new_staging_dir(settings, ADVISOR)
    fake_adapter(staging)
    (staging / "adapter_config.json").chmod(0o600)  # as a mkstemp-then-rename writer leaves it
    adapter, _ = registry.publish(state, settings, ADVISOR, staging, "tiny-base", {})
    modes = _modes(adapter.path)
    assert modes.pop(".") == 0o755
    assert set(modes) == {"adapter_config.json", "adapter_model.safetensors", ADAPTER_META}
    assert set(modes.values()) == {0o644}


def test_listing_creates_no_state(mondrian_home, capsys):
    """A read-only command on a fresh machine: it reports nothing and writes nothing."""
    assert main(["adapters", "list"]) == 0
    assert "no adapter versions" in capsys.readouterr().out
    assert main(["adapters", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["adapters", "activate", f"{ADVISOR}@v1"]) == 2
    assert "no adapter versions yet" in capsys.readouterr().err
    assert main(["adapters", "export", f"{ADVISOR}@v1", "--format", "mlx", "out"]) == 2
    assert not mondrian_home.exists()


def test_listing_reads_existing_state(state, settings, tmp_path, capsys):
    _publish(state, settings, tmp_path)
    state.close()
    assert main(["adapters", "list", "--json"]) == 0
    assert [r["ref"] for r in json.loads(capsys.readouterr().out)] == [f"{ADVISOR}@v1"]
