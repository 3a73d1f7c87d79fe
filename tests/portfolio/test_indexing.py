"""Indexing a folder of real photographs with a tiny real model."""

from __future__ import annotations

import numpy as np
import pytest

from mondrian.portfolio.indexing import collect_files, index_paths, pending_files
from mondrian.portfolio.retrieval import decode_embedding
from mondrian.storage import images, profiles

pytestmark = pytest.mark.model

ASSETS = ("astronaut", "camera", "chelsea", "coffee", "hubble_deep_field", "rocket")


class Interrupt(Exception):
    pass


def _stored(db, advisor_id="ansel"):
    with db.read() as conn:
        return profiles.list_profiles(conn, advisor_id), images.list_portfolio(conn, advisor_id)


def _count_generations(backend, monkeypatch) -> list[int]:
    calls: list[int] = []
    original = backend.generate

    def counting(requests, on_token=None):
        calls.append(len(requests))
        return original(requests, on_token)

    monkeypatch.setattr(backend, "generate", counting)
    return calls


def test_indexing_the_asset_folder_fills_profiles_and_embeddings(ctx, ansel, photos_dir):
    report = index_paths(ctx, ansel, [photos_dir])

    assert sorted(p.stem for p in report.indexed) == sorted(ASSETS)
    assert not report.skipped and not report.unreadable and not report.failed
    stored, portfolio = _stored(ctx.db)
    assert len(stored) == len(portfolio) == len(ASSETS)
    assert sorted(item.title for item in portfolio) == sorted(ASSETS)
    files = {images.content_hash(p.read_bytes()) for p in photos_dir.glob("*.jpg")}
    assert {p.image_hash for p in stored} == files
    for profile in stored:
        assert profile.source == "model" and profile.model == ctx.backend.model_id
        dims = dict(profile.critique.dimensions.items())
        assert all(dim.expected_score is not None for dim in dims.values())
        vector = decode_embedding(profile.embedding)
        assert vector is not None and vector.shape == (128,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    with ctx.db.read() as conn:
        for item in portfolio:
            assert images.image_path(conn, ctx.settings.images_dir, item.image_hash).is_file()


def test_reindexing_is_a_no_op(ctx, ansel, photo_copies, monkeypatch):
    folder = photo_copies("chelsea", "coffee", "rocket")
    index_paths(ctx, ansel, [folder])
    before, _ = _stored(ctx.db)
    calls = _count_generations(ctx.backend, monkeypatch)

    assert pending_files(ctx.db, ansel.id, collect_files([folder])) == []
    report = index_paths(ctx, ansel, [folder])

    assert calls == []  # no model work at all
    assert not report.indexed and len(report.skipped) == 3
    after, portfolio = _stored(ctx.db)
    assert after == before and len(portfolio) == 3


def test_an_interrupted_run_resumes_without_duplicates(ctx, ansel, photos_dir):
    batch_size = 4  # the model profiles 4 at a time; the interruption comes after 2
    reported = []

    def stop_after_two(event):
        reported.append(event)
        if len(reported) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        index_paths(ctx, ansel, [photos_dir], stop_after_two, batch_size=batch_size)
    stored, _ = _stored(ctx.db)
    # What was reported done is stored, and nothing else (each image is written just
    # before it is reported, even when the model profiled a larger batch).
    assert {e.image_hash for e in reported} == {p.image_hash for p in stored}
    assert len(stored) == 2
    assert [e.done for e in reported] == [1, 2] and reported[0].total == len(ASSETS)

    report = index_paths(ctx, ansel, [photos_dir], batch_size=batch_size)

    assert len(report.skipped) == len(stored)
    assert len(report.indexed) == len(ASSETS) - len(stored)
    stored, portfolio = _stored(ctx.db)
    assert len(stored) == len(portfolio) == len(ASSETS)
    assert len({p.image_hash for p in stored}) == len(ASSETS)
    with ctx.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == len(ASSETS)


def test_unreadable_files_are_reported_and_skipped(ctx, ansel, photo_copies, tmp_path):
    folder = photo_copies("chelsea", "rocket")
    (folder / "broken.jpg").write_text("this is not a JPEG\n")
    (folder / "notes.txt").write_text("not an image suffix: ignored in folders\n")
    (folder / "same-cat.jpg").write_bytes((folder / "chelsea.jpg").read_bytes())
    missing = tmp_path / "nowhere.jpg"
    events = []

    report = index_paths(ctx, ansel, [folder, missing], events.append)

    assert sorted(p.name for p in report.indexed) == ["chelsea.jpg", "rocket.jpg"]
    assert [p.name for p in report.skipped] == ["same-cat.jpg"]  # same bytes, one profile
    unreadable = dict(report.unreadable)
    assert set(unreadable) == {folder / "broken.jpg", missing}
    assert "not an image" in unreadable[folder / "broken.jpg"]
    assert "no such file" in unreadable[missing]
    assert [e.done for e in events] == [1, 2, 3, 4, 5] and {e.total for e in events} == {5}
    stored, _ = _stored(ctx.db)
    assert len(stored) == 2
