"""Several replicas' storage on one PostgreSQL, in one process: each `PostgresDatabase` is
what one replica opens. Replicas that start together migrate once; a job is claimed by
exactly one of them; the bounded queue holds across them; the A/B variant is a function
of the job id alone."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from mondrian.modes import Policy
from mondrian.service import admission
from mondrian.service.policy import ModelPolicy
from mondrian.storage import images, job_leases, jobs
from mondrian.storage.migrations import MIGRATIONS, applied
from mondrian.storage.postgres import PostgresDatabase

pytestmark = pytest.mark.postgres

PNG = b"\x89PNG\r\n\x1a\n" + b"replica" * 10
REPLICAS = 3


def _open_and_count(url: str, barrier, out) -> None:
    barrier.wait(timeout=60)  # all at once: the migrations race on an empty database
    with PostgresDatabase(url) as db, db.read() as conn:
        out.put(applied(conn))


def test_replicas_starting_together_migrate_once(pg_server):
    url = pg_server.fresh_database()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(REPLICAS), ctx.Queue()
    procs = [ctx.Process(target=_open_and_count, args=(url, barrier, out)) for _ in range(REPLICAS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = [m.name for m in MIGRATIONS]
    assert [out.get(timeout=10) for _ in procs] == [names] * REPLICAS
    with PostgresDatabase(url) as db, db.read() as conn:
        rows = conn.execute("SELECT name, count(*) FROM _migrations GROUP BY name").fetchall()
    assert {row[0]: row[1] for row in rows} == dict.fromkeys(names, 1)


@pytest.fixture
def replicas(pg_server):
    url = pg_server.fresh_database()
    opened = [PostgresDatabase(url).open() for _ in range(REPLICAS)]
    yield opened
    for db in opened:
        db.close()


def test_each_job_is_claimed_by_exactly_one_replica(replicas, tmp_path: Path):
    first = replicas[0]
    image_hash = first.write(images.store_image, tmp_path, PNG, "image/png", 4, 3)
    made = [first.write(jobs.create_job, "ansel", image_hash, "baseline", "m") for _ in range(150)]
    claims: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(db: PostgresDatabase, name: str) -> None:
        while (job := db.write(job_leases.claim_next_job, owner=name)) is not None:
            with lock:
                claims.setdefault(job.id, []).append(name)
            db.write(jobs.fail_job, job.id, "not run: a claim test")

    threads = [
        threading.Thread(target=worker, args=(db, f"r{i}-t{t}"))
        for i, db in enumerate(replicas)
        for t in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(claims) == sorted(j.id for j in made)
    assert all(len(names) == 1 for names in claims.values())
    assert len({names[0][:2] for names in claims.values()}) == REPLICAS  # all took work
    with first.read() as conn:
        assert jobs.count_by_status(conn)["failed"] == len(made)


def test_the_bounded_queue_holds_across_replicas(replicas, tmp_path: Path):
    capacity = 10
    policy = ModelPolicy(Policy.AB_TEST, 0.5)
    image_hash = replicas[0].write(images.store_image, tmp_path, PNG, "image/png", 4, 3)
    admitted: list[jobs.Job] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(REPLICAS * 4)

    def submit(db: PostgresDatabase) -> None:
        start.wait(30)
        for _ in range(5):
            try:
                job = db.write(
                    admission.admit, "ansel", image_hash, "baseline", "m", policy, capacity
                )
            except admission.QueueAtCapacity as full:
                with lock:
                    refused.append(full.depth)
            else:
                with lock:
                    admitted.append(job)

    threads = [threading.Thread(target=submit, args=(db,)) for db in replicas for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(admitted) == capacity and len(refused) == REPLICAS * 4 * 5 - capacity
    assert set(refused) == {capacity}  # every refusal saw the full queue, counted in the DB
    # The variant is drawn from the job id, whichever replica admitted the job.
    assert all(job.variant == policy.variant_for(job.id) for job in admitted)
