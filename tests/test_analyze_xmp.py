"""`mondrian analyze DIR --xmp` on a tiny model: one batch for the shoot, a sidecar pair
per photo rated from its score, the photos untouched, a hand-set rating kept."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from mondrian.backends import protocol as backend_registry
from mondrian.cli import main as cli_main
from mondrian.config import load_settings
from mondrian.reports import xmp
from mondrian.storage import batches
from mondrian.storage.bootstrap import open_state
from mondrian.storage.job_pages import page_jobs

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def short_backend(tiny_checkpoint_factory):
    from mondrian.backends.transformers.backend import TransformersBackend

    return TransformersBackend(str(tiny_checkpoint_factory()), max_text_chars=8, max_list_items=1)


@pytest.fixture
def analyze(monkeypatch, short_backend):
    monkeypatch.setattr(backend_registry, "create_backend", lambda settings, **_: short_backend)
    return lambda *argv: cli_main.main(["analyze", *argv, "--no-progress"])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_folder_is_one_batch_and_each_photo_gets_its_sidecars(
    analyze, photos_dir, tmp_path, capsys
):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(photos_dir / name, shoot / name)
    before = {p.name: (digest(p), p.stat().st_mtime_ns) for p in shoot.iterdir()}
    out = tmp_path / "reports"
    assert analyze(str(shoot), "--advisor", "ansel", "--xmp", "--out", str(out)) == 0
    assert "star(s)" in capsys.readouterr().err
    with open_state(load_settings()) as db, db.read() as conn:
        jobs = page_jobs(conn, limit=10).jobs
        assert len(jobs) == 2 and jobs[0].batch_id is not None
        assert {j.batch_id for j in jobs} == {jobs[0].batch_id}
        assert batches.require_batch(conn, jobs[0].batch_id).source == "cli"
    for job in jobs:
        expected = xmp.stars(job.score)
        stem = job.photo_name.rsplit(".", 1)[0]
        for name in (f"{job.photo_name}.xmp", f"{stem}.xmp"):
            assert xmp.read_rating((shoot / name).read_bytes()) == expected
    for name, (sha, mtime) in before.items():  # the originals, byte for byte and untouched
        assert (digest(shoot / name), (shoot / name).stat().st_mtime_ns) == (sha, mtime)


def test_a_rating_set_by_hand_is_kept_unless_forced(analyze, photos_dir, tmp_path, capsys):
    photo = tmp_path / "chelsea.jpg"
    shutil.copy(photos_dir / "chelsea.jpg", photo)
    # A rating no critique gives (0 stars is "unrated", so -1: rejected in Lightroom).
    hand = xmp.sidecar_xml(xmp.Rating(stars=1, score=1.0, advisors=())).replace(
        b'xmp:Rating="1"', b'xmp:Rating="-1"'
    )
    (tmp_path / "chelsea.xmp").write_bytes(hand)
    out = str(tmp_path / "r")
    assert analyze(str(photo), "--advisor", "ansel", "--xmp", "--out", out) == 2
    assert "already rates this photo -1" in capsys.readouterr().err
    assert (tmp_path / "chelsea.xmp").read_bytes() == hand
    assert not (tmp_path / "chelsea.jpg.xmp").exists()
    assert analyze(str(photo), "--advisor", "ansel", "--xmp", "--force", "--out", out) == 0
    assert xmp.read_rating((tmp_path / "chelsea.xmp").read_bytes()) >= 1


def test_force_alone_is_refused_before_anything_runs(analyze, photos_dir, capsys):
    assert analyze(str(photos_dir / "chelsea.jpg"), "--advisor", "ansel", "--force") != 0
    assert "--force goes with --xmp" in capsys.readouterr().err


def test_one_photo_is_no_batch(analyze, photos_dir, tmp_path):
    assert (
        analyze(str(photos_dir / "coffee.jpg"), "--advisor", "ansel", "--out", str(tmp_path)) == 0
    )
    with open_state(load_settings()) as db, db.read() as conn:
        assert page_jobs(conn, limit=1).jobs[0].batch_id is None
