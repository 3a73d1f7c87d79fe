"""staged_output(): a folder appears complete or not at all, and a failure leaves the old one."""

from __future__ import annotations

import stat

import pytest

from mondrian.errors import InvalidInput
from mondrian.staging import prepare_out_dir, staged_output, staging_area


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_finished_output_replaces_the_old_one_with_readable_modes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_output(out) as staging:
        assert staging.parent == tmp_path and staging != out
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").is_file(), "the old output serves until the rename"
    assert _entries(out) == ["new.txt"]
    assert _entries(tmp_path) == ["out"], "no staging or swapped-out folder is left"
    assert stat.S_IMODE(out.stat().st_mode) & 0o055, "not left private like mkdtemp's 0700"


def test_a_failure_leaves_the_old_output_and_no_staging_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="half way"), staged_output(out) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("half way")
    assert _entries(out) == ["old.txt"]
    assert _entries(tmp_path) == ["out"]


def test_a_new_target_appears_only_at_the_end(tmp_path):
    out = tmp_path / "deep" / "out"
    with staged_output(out) as staging:
        (staging / "f").write_text("x")
        assert not out.exists()
    assert _entries(out) == ["f"]


def test_a_staging_area_renamed_away_is_kept_and_one_left_is_removed(tmp_path):
    with staging_area(tmp_path, ".staging-") as staging:
        staging.rename(tmp_path / "kept")
    with staging_area(tmp_path, ".staging-") as staging:
        (staging / "f").write_text("x")
    assert _entries(tmp_path) == ["kept"]


def test_only_a_marked_output_is_replaced_and_only_with_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").write_text("someone's files")
    with pytest.raises(InvalidInput, match="--force"):
        prepare_out_dir(out, False, "manifest.json", "a data set")
    with pytest.raises(InvalidInput, match=r"no manifest\.json"):
        prepare_out_dir(out, True, "manifest.json", "a data set")
    (out / "manifest.json").write_text("{}")
    assert prepare_out_dir(out, True, "manifest.json", "a data set") == out.absolute()


def test_write_atomic_replaces_a_file_whole_with_the_asked_mode(tmp_path):
    from mondrian.staging import write_atomic

    target = tmp_path / "sub" / "page.html"
    write_atomic(target, "first")
    assert target.read_text() == "first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, b"\x00second", mode=0o600)
    assert target.read_bytes() == b"\x00second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _entries(target.parent) == ["page.html"], "no temporary file is left"


def test_write_atomic_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from mondrian.staging import write_atomic

    target = tmp_path / "data.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]  # neither str nor bytes
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["data.json"]
