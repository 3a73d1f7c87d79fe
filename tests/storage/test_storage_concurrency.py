"""Many writers lose nothing: threads through one Database, and separate processes, each
with its own Database, on one file that none of them has created yet."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from mondrian.storage import Database, jobs
from mondrian.storage.images import store_image
from mondrian.storage.migrations import MIGRATIONS, applied

IMAGE = b"\x89PNG\r\n\x1a\n" + b"shared" * 20
JOBS_PER_PROCESS = 200
PROCESSES = 3


def _insert_jobs(db: Database, images_dir: Path, advisor_id: str, n: int) -> None:
    image_hash = db.write(store_image, images_dir, IMAGE, "image/png", 2, 2)
    for _ in range(n):
        db.write(jobs.create_job, advisor_id, image_hash, "baseline", "tiny")


def _process_writer(db_path: str, images_dir: str, advisor_id: str, barrier, errors) -> None:
    try:
        barrier.wait(timeout=60)  # open all at once: migrations race on a fresh file
        with Database(db_path) as db:
            _insert_jobs(db, Path(images_dir), advisor_id, JOBS_PER_PROCESS)
    except BaseException as exc:
        errors.put(f"{advisor_id}: {type(exc).__name__}: {exc}")
        raise


def test_eight_threads_through_one_database(db, images_dir):
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            _insert_jobs(db, images_dir, f"thread{i}", 100)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as conn:
        rows = conn.execute("SELECT advisor_id, count(*) FROM jobs GROUP BY advisor_id").fetchall()
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == 1
    assert {row[0]: row[1] for row in rows} == {f"thread{i}": 100 for i in range(8)}


def test_separate_processes_on_one_fresh_file(tmp_path):
    db_path = tmp_path / "shared.db"
    images_dir = tmp_path / "images"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    errors = ctx.Queue()
    procs = [
        ctx.Process(
            target=_process_writer,
            args=(str(db_path), str(images_dir), f"proc{i}", barrier, errors),
        )
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    # This process writes too, through its own Database, while the children do.
    barrier.wait(timeout=60)
    start = time.monotonic()
    with Database(db_path) as db:
        _insert_jobs(db, images_dir, "parent", JOBS_PER_PROCESS)
        for p in procs:
            p.join(timeout=120)
        elapsed = time.monotonic() - start
        failures = []
        while not errors.empty():
            failures.append(errors.get())
        assert failures == []
        assert [p.exitcode for p in procs] == [0] * PROCESSES
        with db.read() as conn:
            counts = dict(
                conn.execute("SELECT advisor_id, count(*) FROM jobs GROUP BY advisor_id").fetchall()
            )
            assert applied(conn) == [m.name for m in MIGRATIONS]  # each ran exactly once
            assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == 1
            assert conn.execute("SELECT count(DISTINCT id) FROM jobs").fetchone()[0] == 800
    expected = {f"proc{i}": JOBS_PER_PROCESS for i in range(PROCESSES)}
    assert counts == {**expected, "parent": JOBS_PER_PROCESS}
    assert [p.name for p in images_dir.rglob("*") if p.is_file()] == [f"{jobs_hash()}.png"]
    # Lock waits are short sleeps, not whole seconds (SQLite built without usleep would
    # make this crawl); generous bound for a loaded 2-core machine.
    assert elapsed < 30


def jobs_hash() -> str:
    import hashlib

    return hashlib.sha256(IMAGE).hexdigest()
