"""The library's storage and CLI without a model: deleting a critique (its photo removed
only when nothing else uses it, reviews protected), batches, history by mode,
`mondrian delete`."""

from __future__ import annotations

import json

import pytest

from job_helpers import done_job, photo_jpeg
from mondrian.cli.main import main
from mondrian.errors import InvalidInput, NotFound
from mondrian.schema import example_critique
from mondrian.storage import batches, images, jobs, reviews
from mondrian.storage.job_pages import page_jobs


def image_file(db, settings, image_hash):
    with db.read() as conn:
        return images.image_path(conn, settings.images_dir, image_hash)


def test_deleting_the_only_job_of_a_photo_removes_the_photo(db, settings):
    job = done_job(db, settings)
    path = image_file(db, settings, job.image_hash)
    assert path.is_file()
    deleted = db.write(jobs.delete_job, settings.images_dir, job.id)
    assert deleted.photo_removed and deleted.job.id == job.id
    with db.read() as conn:
        assert jobs.get_job(conn, job.id) is None
        assert images.get_image(conn, job.image_hash) is None
    assert not path.exists()


def test_a_photo_another_job_uses_stays(db, settings):
    first = done_job(db, settings, "ansel", score=6)
    second = done_job(db, settings, "fan_ho", score=6)  # the same bytes: the same image
    assert first.image_hash == second.image_hash
    assert not db.write(jobs.delete_job, settings.images_dir, first.id).photo_removed
    assert image_file(db, settings, second.image_hash).is_file()
    assert db.write(jobs.delete_job, settings.images_dir, second.id).photo_removed


def test_a_photo_in_a_portfolio_stays(db, settings):
    job = done_job(db, settings)
    db.write(images.add_to_portfolio, "ansel", job.image_hash)
    assert not db.write(jobs.delete_job, settings.images_dir, job.id).photo_removed
    assert image_file(db, settings, job.image_hash).is_file()


def test_a_queued_job_is_not_deleted(db, settings):
    data = photo_jpeg()
    image_hash = db.write(images.store_image, settings.images_dir, data, "image/jpeg", 96, 72)
    job = db.write(jobs.create_job, "ansel", image_hash, "baseline", "tiny")
    with pytest.raises(jobs.InUse, match="is queued"):
        db.write(jobs.delete_job, settings.images_dir, job.id)
    with db.read() as conn:
        assert jobs.get_job(conn, job.id) is not None


def test_a_reviewed_job_is_kept_with_its_reviews(db, settings):
    job = done_job(db, settings)
    db.write(reviews.add_review, job.id, example_critique(8), author="client:test")
    with pytest.raises(jobs.InUse, match="review") as caught:
        db.write(jobs.delete_job, settings.images_dir, job.id)
    assert caught.value.code == "has_reviews" and caught.value.http_status == 409
    with db.read() as conn:
        assert jobs.get_job(conn, job.id) is not None
        assert len(reviews.list_reviews(conn, job_id=job.id)) == 1


def test_an_unknown_job_is_not_found(db, settings):
    with pytest.raises(NotFound):
        db.write(jobs.delete_job, settings.images_dir, "0" * 32)


def test_a_batch_groups_its_jobs_in_order(db, settings):
    batch = db.write(batches.create_batch, "studio")
    made = [done_job(db, settings, photo_name=f"p{i}.jpg", score=4 + i) for i in range(3)]
    for job in made[:2]:
        db.write(batches.add_to_batch, batch.id, job.id, f"C:\\shoot\\{job.photo_name}")
    with db.read() as conn:
        listed = batches.batch_jobs(conn, batch.id)
        assert [j.id for j in listed] == [j.id for j in made[:2]]
        assert [j.photo_name for j in listed] == ["p0.jpg", "p1.jpg"]  # no folder kept
        assert all(j.batch_id == batch.id for j in listed)
        assert batches.require_batch(conn, batch.id).source == "studio"
    other = db.write(batches.create_batch, "api")
    with pytest.raises(InvalidInput, match="already in batch"):
        db.write(batches.add_to_batch, other.id, made[0].id)
    with pytest.raises(NotFound):
        db.write(batches.add_to_batch, "f" * 32, made[2].id)
    with pytest.raises(NotFound):
        batches.check_batch_id("../x")
    with pytest.raises(InvalidInput):
        db.write(batches.create_batch, "elsewhere")


def test_history_filters_by_the_mode_that_served(db, settings):
    job = done_job(db, settings)
    with db.read() as conn:
        assert [j.id for j in page_jobs(conn, mode_used="baseline").jobs] == [job.id]
        assert page_jobs(conn, mode_used="rag").jobs == []


def test_mondrian_delete_says_what_it_did(db, settings, capsys):
    job = done_job(db, settings, photo_name="dunes.jpg")
    assert main(["delete", job.id[:8]]) == 0
    out = capsys.readouterr().out
    assert f"deleted job {job.id} (dunes.jpg, ansel); its photo removed" in out
    assert main(["delete", job.id]) != 0  # gone now: a message, not a traceback
    err = capsys.readouterr().err
    assert "no job" in err and "Traceback" not in err


def test_mondrian_delete_json_and_a_reviewed_job(db, settings, capsys):
    job = done_job(db, settings)
    keep = done_job(db, settings, "fan_ho")
    db.write(reviews.add_review, keep.id, example_critique(8), author="client:test")
    assert main(["delete", job.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": job.id, "photo_removed": False}
    assert main(["delete", keep.id]) != 0
    assert "review" in capsys.readouterr().err
