"""A claimed job's lease (migration 0010), on SQLite and PostgreSQL: renewed by its worker,
taken back by another once it runs out, failed with a reason after the attempts."""

from __future__ import annotations

import time

import pytest

from mondrian.errors import InvalidInput
from mondrian.storage import images, job_leases, jobs

PNG = b"\x89PNG\r\n\x1a\n" + b"lease" * 10


def queue(db, images_dir, n):
    image_hash = db.write(images.store_image, images_dir, PNG, "image/png", 4, 3)
    return [db.write(jobs.create_job, "ansel", image_hash, "baseline", "tiny") for _ in range(n)]


def test_a_claim_records_its_lease_and_owner(db, images_dir):
    made = queue(db, images_dir, 2)
    claimed = db.write(job_leases.claim_next_job, lease_s=30, owner="host-a:1")
    assert claimed.id == made[0].id and claimed.status == "running"
    assert claimed.claimed_by == "host-a:1" and claimed.lease_until > job_leases.lease_end(25)
    with pytest.raises(InvalidInput, match="lease"):
        db.write(job_leases.claim_next_job, lease_s=0)


def test_renewal_extends_only_the_owners_running_jobs(db, images_dir):
    queue(db, images_dir, 2)
    mine = db.write(job_leases.claim_next_job, lease_s=5, owner="a")
    theirs = db.write(job_leases.claim_next_job, lease_s=5, owner="b")
    lost = db.write(job_leases.renew_leases, [mine.id, theirs.id], 100, "a")
    assert lost == [theirs.id]  # b's job is not a's to renew
    with db.read() as conn:
        renewed, other = jobs.get_job(conn, mine.id), jobs.get_job(conn, theirs.id)
    assert renewed.lease_until > job_leases.lease_end(90)
    assert other.lease_until == theirs.lease_until
    assert db.write(job_leases.renew_leases, [], 100, "a") == []


def test_expired_leases_are_requeued_then_failed_with_a_reason(db, images_dir):
    (job,) = queue(db, images_dir, 1)
    live = queue(db, images_dir, 1)[0]
    db.write(job_leases.claim_next_job, lease_s=0.05, owner="dead:1")
    db.write(job_leases.claim_next_job, lease_s=600, owner="alive:2")
    time.sleep(0.1)
    first = db.write(job_leases.recover_expired, 2)
    assert first.requeued == [job.id] and first.failed == []  # the live one is left alone
    with db.read() as conn:
        back, running = jobs.get_job(conn, job.id), jobs.get_job(conn, live.id)
    assert back.status == "queued" and back.lease_until is None and "dead:1" in back.error
    assert running.status == "running" and running.claimed_by == "alive:2"
    again = db.write(job_leases.claim_next_job, lease_s=0.05, owner="dead:3")
    assert again.id == job.id and again.attempts == 2
    time.sleep(0.1)
    second = db.write(job_leases.recover_expired, 2)
    assert second.failed == [job.id] and second.requeued == []
    with db.read() as conn:
        failed = jobs.get_job(conn, job.id)
    assert failed.status == "failed" and "2 attempt(s) (limit 2)" in failed.error
    assert "lease ran out" in failed.error and failed.finished_at


def test_a_job_without_a_lease_is_never_taken_back(db, images_dir):
    """`mondrian analyze` starts its own job without a lease: no server may take it."""
    (job,) = queue(db, images_dir, 1)
    db.write(jobs.start_job, job.id)
    assert db.write(job_leases.recover_expired, 2).requeued == []
