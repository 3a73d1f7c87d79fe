"""staged_output(): a folder appears complete or not at all, and a failure leaves the old one."""

from __future__ import annotations

import stat

import pytest

from mondrian.errors import InvalidInput
from mondrian.staging import prepare_out_dir, staged_output, staging_area, sweep_stale


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


_HOLD = """
import sys, time
from pathlib import Path
from mondrian.staging import staging_area
with staging_area(Path(sys.argv[1]), ".staging-") as staging:
    (staging / "weights").write_text("half")
    print(staging, flush=True)
    time.sleep(60)
"""


def _stage_in_child(parent):
    """A process with a staging folder open in `parent`, and that folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(parent)], stdout=subprocess.PIPE, text=True, env=env
    )
    return child, Path(child.stdout.readline().strip())


def test_a_killed_writers_staging_is_swept_and_a_live_ones_kept(tmp_path):
    import signal

    killed, stale = _stage_in_child(tmp_path)
    live, busy = _stage_in_child(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert stale.is_dir(), "kill -9 left its staging folder (nothing could clean up)"
        with staging_area(tmp_path, ".staging-") as mine:
            assert not stale.exists() and not stale.with_name(stale.name + ".lock").exists()
            assert busy.is_dir(), "a folder a live process holds is never taken"
        assert not mine.exists()
    finally:
        live.kill()
        live.wait(10)
    assert sweep_stale(tmp_path, ".staging-") == [busy]
    assert _entries(tmp_path) == []


def test_a_swapped_out_old_output_left_by_a_crash_is_swept(tmp_path):
    out = tmp_path / "out"
    # A kill between install_dir's two renames: the old output swapped aside, and the
    # staging's lock file, now held by no one.
    (tmp_path / ".out.old-abc").mkdir()
    (tmp_path / ".out.partial-abc.lock").touch()
    with staged_output(out) as staging:
        (staging / "f").write_text("x")
    assert _entries(tmp_path) == ["out"]


def test_an_unlocked_staging_folder_is_kept_until_it_is_old(tmp_path):
    import os

    young = tmp_path / ".staging-young"
    aged = tmp_path / ".staging-aged"
    young.mkdir()
    aged.mkdir()
    os.utime(aged, (1, 1))
    assert sweep_stale(tmp_path, ".staging-") == [aged]
    assert young.is_dir()
