"""Each repository round-trips, and guards what it promises to guard."""

from __future__ import annotations

import hashlib
import threading

import pytest

from mondrian.advisors.model import Advisor
from mondrian.errors import InvalidInput, NotFound
from mondrian.schema import DIMENSIONS, AnalysisResult, Critique, ModelInfo, example_critique
from mondrian.storage import adapters, advisors, images, job_leases, jobs, profiles, reviews
from mondrian.storage.dialect import integrity_error

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10


def make_advisor(advisor_id: str = "ansel", name: str = "Ansel Adams") -> Advisor:
    return Advisor(
        id=advisor_id,
        name=name,
        years="1902-1984",
        bio="American landscape photographer.",
        sources=["https://example.org/bio"],
        philosophy="Visualise the print before exposing.",
        techniques=["Zone System"],
        voice_prompt="You are Ansel Adams.",
        weights=dict.fromkeys(DIMENSIONS, 1.0),
    )


def store(db, images_dir, data=PNG, mime="image/png"):
    return db.write(images.store_image, images_dir, data, mime, 4, 3)


# --- advisors -----------------------------------------------------------------------


def test_advisor_round_trip_and_upsert_keeps_created_at(db):
    ansel = make_advisor()
    db.write(advisors.upsert_advisor, ansel, builtin=True)
    db.write(advisors.upsert_advisor, make_advisor("fanho", "Fan Ho"))
    with db.read() as conn:
        assert advisors.get_advisor(conn, "ansel") == ansel
        assert advisors.get_advisor(conn, "nobody") is None
        assert [a.id for a in advisors.list_advisors(conn)] == ["ansel", "fanho"]
        assert [a.id for a in advisors.list_advisors(conn, builtin=True)] == ["ansel"]
        assert advisors.is_builtin(conn, "ansel") and not advisors.is_builtin(conn, "fanho")
        created = conn.execute("SELECT created_at FROM advisors WHERE id = 'ansel'").fetchone()[0]
    renamed = ansel.model_copy(update={"name": "A. Adams"})
    db.write(advisors.upsert_advisor, renamed, builtin=True)
    with db.read() as conn:
        assert advisors.get_advisor(conn, "ansel").name == "A. Adams"
        row = conn.execute("SELECT * FROM advisors WHERE id = 'ansel'").fetchone()
    assert row["created_at"] == created and row["updated_at"] >= created
    assert row["name"] == "A. Adams"


def test_delete_advisor_takes_portfolio_and_profiles(db, images_dir):
    db.write(advisors.upsert_advisor, make_advisor())
    h = store(db, images_dir)
    db.write(images.add_to_portfolio, "ansel", h, "Moonrise")
    db.write(profiles.upsert_profile, "ansel", h, example_critique(), "model", "tiny")
    db.write(advisors.delete_advisor, "ansel")
    with db.read() as conn:
        assert advisors.get_advisor(conn, "ansel") is None
        assert images.list_portfolio(conn, "ansel") == []
        assert profiles.list_profiles(conn, "ansel") == []
        assert images.get_image(conn, h) is not None  # content stays
    with pytest.raises(NotFound, match="nobody"):
        db.write(advisors.delete_advisor, "nobody")


# --- images and portfolio -----------------------------------------------------------


def test_images_are_stored_by_content_hash(db, images_dir):
    h = store(db, images_dir)
    assert h == hashlib.sha256(PNG).hexdigest()
    expected = images_dir / h[:2] / f"{h}.png"
    assert expected.read_bytes() == PNG
    with db.read() as conn:
        img = images.get_image(conn, h)
        assert images.image_path(conn, images_dir, h) == expected.resolve()
    assert (img.path, img.mime, img.width, img.height, img.size_bytes) == (
        f"{h[:2]}/{h}.png",
        "image/png",
        4,
        3,
        len(PNG),
    )
    # Everything under images_dir is named by the hash; no temporary files are left.
    assert [p.name for p in images_dir.rglob("*") if p.is_file()] == [f"{h}.png"]


def test_storing_the_same_bytes_again_is_a_no_op(db, images_dir):
    h = store(db, images_dir)
    with db.read() as conn:
        before = images.get_image(conn, h)
    assert store(db, images_dir, mime="image/jpeg") == h
    with db.read() as conn:
        assert images.get_image(conn, h) == before  # first record wins, even the mime
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == 1
    assert len([p for p in images_dir.rglob("*") if p.is_file()]) == 1
    other = store(db, images_dir, data=PNG + b"!")
    assert other != h


def test_a_lost_file_is_restored_by_storing_again(db, images_dir):
    h = store(db, images_dir)
    path = images_dir / h[:2] / f"{h}.png"
    path.unlink()
    store(db, images_dir)
    assert path.read_bytes() == PNG


def test_image_inputs_are_checked(db, images_dir):
    with pytest.raises(InvalidInput, match="unsupported image type"):
        store(db, images_dir, mime="text/html")
    with pytest.raises(InvalidInput, match=r"\.\./\.\./etc"):
        store(db, images_dir, mime="../../etc/passwd")
    with pytest.raises(InvalidInput, match="empty"):
        store(db, images_dir, data=b"")
    with pytest.raises(InvalidInput, match="positive"):
        db.write(images.store_image, images_dir, PNG, "image/png", 0, 3)
    with db.read() as conn:
        with pytest.raises(InvalidInput, match="not an image hash"):
            images.image_path(conn, images_dir, "../../etc/passwd")
        with pytest.raises(NotFound, match="no stored image"):
            images.image_path(conn, images_dir, "0" * 64)
    assert not images_dir.exists() or not any(images_dir.rglob("*"))


def test_a_tampered_path_cannot_leave_the_images_dir(db, images_dir):
    h = store(db, images_dir)
    db.write(lambda conn: conn.execute("UPDATE images SET path = '../../x.png'"))
    with db.read() as conn, pytest.raises(InvalidInput, match="leaves the images directory"):
        images.image_path(conn, images_dir, h)


def test_portfolio_round_trip(db, images_dir):
    a, b = store(db, images_dir), store(db, images_dir, data=PNG + b"b")
    db.write(images.add_to_portfolio, "ansel", a, "Moonrise")
    db.write(images.add_to_portfolio, "ansel", b)
    db.write(images.add_to_portfolio, "ansel", a, "Moonrise, Hernandez")  # retitle
    with db.read() as conn:
        items = images.list_portfolio(conn, "ansel")
        assert images.list_portfolio(conn, "fanho") == []
    assert [(i.image_hash, i.title) for i in items] == [(a, "Moonrise, Hernandez"), (b, None)]
    assert items[0].image.hash == a and items[0].image.mime == "image/png"
    with pytest.raises(NotFound, match="no stored image"):
        db.write(images.add_to_portfolio, "ansel", "f" * 64)
    db.write(images.remove_from_portfolio, "ansel", b)
    with pytest.raises(NotFound, match="not in"):
        db.write(images.remove_from_portfolio, "ansel", b)


# --- profiles -----------------------------------------------------------------------


def test_profile_round_trip_and_replace(db, images_dir):
    h = store(db, images_dir)
    critique = example_critique(6).scored()
    db.write(profiles.upsert_profile, "ansel", h, critique, "model", "tiny", b"\x00\x01\x02")
    with db.read() as conn:
        p = profiles.get_profile(conn, "ansel", h)
        assert profiles.has_profile(conn, "ansel", h)
        assert not profiles.has_profile(conn, "fanho", h)
        assert profiles.get_profile(conn, "fanho", h) is None
    assert (p.critique, p.source, p.model, p.embedding) == (
        critique,
        "model",
        "tiny",
        b"\x00\x01\x02",
    )
    assert isinstance(p.critique, Critique) and p.critique.overall_score == critique.overall_score

    curated = example_critique(9)
    db.write(profiles.upsert_profile, "ansel", h, curated, "curated", None)
    with db.read() as conn:
        (q,) = profiles.list_profiles(conn, "ansel")
        assert profiles.count_profiles(conn, "ansel") == 1
    assert (q.critique, q.source, q.model, q.embedding) == (curated, "curated", None, None)
    assert q.created_at == p.created_at and q.updated_at >= p.updated_at

    db.write(profiles.set_embedding, "ansel", h, b"vec")
    with db.read() as conn:
        assert profiles.get_profile(conn, "ansel", h).embedding == b"vec"


def test_profile_inputs_are_checked(db, images_dir):
    h = store(db, images_dir)
    with pytest.raises(InvalidInput, match="source"):
        db.write(profiles.upsert_profile, "ansel", h, example_critique(), "guess", None)
    with pytest.raises(NotFound, match="no stored image"):
        db.write(profiles.upsert_profile, "ansel", "a" * 64, example_critique(), "model", None)
    with pytest.raises(InvalidInput, match="Critique"):
        db.write(profiles.upsert_profile, "ansel", h, {"image_description": "x"}, "model", None)
    with pytest.raises(NotFound, match="no profile"):
        db.write(profiles.set_embedding, "ansel", h, b"v")


# --- jobs ---------------------------------------------------------------------------


def analysis(advisor_id="ansel", mode_used="baseline") -> AnalysisResult:
    return AnalysisResult(
        advisor_id=advisor_id,
        mode_requested="rag",
        mode_used=mode_used,
        model=ModelInfo(base="tiny", adapter=None, variant="base"),
        critique=example_critique().scored(),
        timings={"total_s": 1.5},
    )


def test_job_lifecycle(db, images_dir):
    h = store(db, images_dir)
    job = db.write(jobs.create_job, "ansel", h, "rag", "tiny", "fine_tuned", 2)
    assert (job.status, job.progress, job.attempts, job.result, job.mode_used) == (
        "queued",
        0.0,
        0,
        None,
        None,
    )
    assert len(job.id) == 32 and job.adapter_ref == "ansel@v2" and job.created_at.endswith("Z")
    assert job.phase == "queued"
    job = db.write(jobs.start_job, job.id)
    assert (job.status, job.attempts) == ("running", 1) and job.started_at
    assert job.phase == "preparing", "running, but no token written yet"
    db.write(jobs.set_progress, job.id, 0.5)
    with db.read() as conn:
        assert jobs.get_job(conn, job.id).progress == 0.5
        assert jobs.get_job(conn, job.id).phase == "generating"
    done = db.write(jobs.finish_job, job.id, analysis(), "baseline")
    assert (done.status, done.progress, done.mode_used) == ("done", 1.0, "baseline")
    assert done.phase == "done"
    assert done.timings == {"total_s": 1.5} and done.finished and done.finished_at
    result = done.analysis()
    assert result.job_id == job.id and result.critique == analysis().critique
    with db.read() as conn:
        assert jobs.get_job(conn, job.id) == done
        assert jobs.get_job(conn, "missing") is None


def test_finish_accepts_a_dict_or_json_and_checks_it(db, images_dir):
    h = store(db, images_dir)
    a = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    b = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    c = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    db.write(jobs.finish_job, a.id, analysis().model_dump(), timings={"x": 2})
    db.write(jobs.finish_job, b.id, analysis().model_dump_json())
    with db.read() as conn:
        assert jobs.get_job(conn, a.id).analysis().timings == {"x": 2.0}
        assert jobs.get_job(conn, b.id).status == "done"
    with pytest.raises(InvalidInput, match="not a valid analysis result"):
        db.write(jobs.finish_job, c.id, {"advisor_id": "ansel"})
    with pytest.raises(InvalidInput, match="differs"):
        db.write(jobs.finish_job, c.id, analysis(), "lora")
    with pytest.raises(InvalidInput, match="advisor"):
        db.write(jobs.finish_job, c.id, analysis(advisor_id="fanho"))
    with pytest.raises(InvalidInput, match="not a valid analysis result"):
        db.write(jobs.finish_job, c.id, "not json")
    with db.read() as conn:
        assert jobs.get_job(conn, c.id).status == "queued"


def test_job_transitions_are_guarded(db, images_dir):
    h = store(db, images_dir)
    job = db.write(jobs.create_job, "ansel", h, "lora", "tiny")
    with pytest.raises(InvalidInput, match="it is queued"):
        db.write(jobs.set_progress, job.id, 0.1)
    db.write(jobs.start_job, job.id)
    with pytest.raises(InvalidInput, match="it is running"):
        db.write(jobs.start_job, job.id)
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        db.write(jobs.set_progress, job.id, 1.5)
    failed = db.write(jobs.fail_job, job.id, "model crashed")
    assert (failed.status, failed.error) == ("failed", "model crashed")
    for action in (jobs.start_job, lambda c, i: jobs.fail_job(c, i, "x")):
        with pytest.raises(InvalidInput, match="it is failed"):
            db.write(action, job.id)
    with pytest.raises(InvalidInput, match="it is failed"):
        db.write(jobs.finish_job, job.id, analysis())
    with pytest.raises(NotFound, match="no job"):
        db.write(jobs.start_job, "nope")
    with pytest.raises(InvalidInput, match="mode_requested"):
        db.write(jobs.create_job, "ansel", h, "magic", "tiny")
    with pytest.raises(InvalidInput, match="variant"):
        db.write(jobs.create_job, "ansel", h, "rag", "tiny", "c")
    with pytest.raises(InvalidInput, match="adapter_version"):
        db.write(jobs.create_job, "ansel", h, "rag", "tiny", "base", 0)
    with pytest.raises(NotFound, match="no stored image"):
        db.write(jobs.create_job, "ansel", "e" * 64, "rag", "tiny")


def test_list_count_and_claim(db, images_dir):
    h = store(db, images_dir)
    made = [db.write(jobs.create_job, adv, h, "baseline", "tiny") for adv in ("ansel", "fanho") * 3]
    claimed = db.write(job_leases.claim_next_job)
    assert claimed.id == made[0].id and claimed.status == "running"
    db.write(jobs.fail_job, made[1].id, "bad")
    with db.read() as conn:
        assert [j.id for j in jobs.list_jobs(conn)] == [j.id for j in reversed(made)]
        assert [j.id for j in jobs.list_jobs(conn, status="running")] == [made[0].id]
        assert [j.id for j in jobs.list_jobs(conn, advisor_id="fanho", limit=2)] == [
            made[5].id,
            made[3].id,
        ]
        assert jobs.count_by_status(conn) == {"queued": 4, "running": 1, "done": 0, "failed": 1}
        with pytest.raises(InvalidInput, match="status"):
            jobs.list_jobs(conn, status="lost")
    for _ in range(4):
        assert db.write(job_leases.claim_next_job) is not None
    assert db.write(job_leases.claim_next_job) is None


def test_crash_recovery_requeues_or_fails_running_jobs(db, images_dir):
    h = store(db, images_dir)
    once = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    twice = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    waiting = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    db.write(jobs.start_job, once.id)
    db.write(jobs.start_job, twice.id)
    db.write(job_leases.requeue_or_fail_running, 5)  # first "restart": both go back
    db.write(jobs.start_job, twice.id)
    recovery = db.write(job_leases.requeue_or_fail_running, 2)
    assert recovery.requeued == [] and recovery.failed == [twice.id]
    with db.read() as conn:
        a, b, c = (jobs.get_job(conn, j.id) for j in (once, twice, waiting))
    assert (a.status, a.attempts, a.started_at) == ("queued", 1, None)
    assert b.status == "failed" and "2 attempt(s)" in b.error and b.finished_at
    assert c.status == "queued" and c.attempts == 0
    with pytest.raises(InvalidInput):
        db.write(job_leases.requeue_or_fail_running, 0)


# --- adapters -----------------------------------------------------------------------


def register(db, n, advisor_id="ansel"):
    return [
        db.write(adapters.register_adapter, advisor_id, f"/a/{advisor_id}/v{i}", "tiny", {"i": i})
        for i in range(n)
    ]


def test_register_numbers_versions_from_one_and_never_reuses(db):
    assert register(db, 3) == [1, 2, 3]
    assert register(db, 1, "fanho") == [1]
    with db.read() as conn:
        v2 = adapters.get_adapter(conn, "ansel", 2)
        assert adapters.get_adapter(conn, "ansel", 9) is None
        assert [a.ref for a in adapters.list_adapters(conn)] == [
            "ansel@v1",
            "ansel@v2",
            "ansel@v3",
            "fanho@v1",
        ]
    assert (str(v2.path), v2.base_model, v2.metadata, v2.active) == (
        "/a/ansel/v1",
        "tiny",
        {"i": 1},
        False,
    )
    db.write(adapters.delete_adapter, "ansel", 3)
    assert register(db, 1) == [4]  # v3 named a deleted adapter; it stays retired
    with pytest.raises(InvalidInput, match="advisor id"):
        db.write(adapters.register_adapter, "Bad Id", "/x", "tiny", {})


def test_activate_and_rollback(db):
    register(db, 3)
    with db.read() as conn:
        assert adapters.get_active(conn, "ansel") is None
    with pytest.raises(InvalidInput, match="no active adapter"):
        db.write(adapters.rollback, "ansel")
    assert db.write(adapters.activate, "ansel", 3).active
    assert db.write(adapters.activate, "ansel", 3).version == 3  # no-op
    assert db.write(adapters.rollback, "ansel").ref == "ansel@v2"
    with db.read() as conn:
        assert [a.active for a in adapters.list_adapters(conn, "ansel")] == [False, True, False]
    db.write(adapters.delete_adapter, "ansel", 1)
    with pytest.raises(InvalidInput, match="oldest version"):
        db.write(adapters.rollback, "ansel")
    with db.read() as conn:
        assert adapters.get_active(conn, "ansel").version == 2  # a failed rollback changes nothing
    with pytest.raises(NotFound, match="ansel@v7"):
        db.write(adapters.activate, "ansel", 7)
    assert db.write(adapters.deactivate, "ansel").version == 2
    assert db.write(adapters.deactivate, "ansel") is None


def test_the_active_adapter_cannot_be_deleted(db):
    register(db, 2)
    db.write(adapters.activate, "ansel", 2)
    with pytest.raises(InvalidInput, match="ansel@v2 is active"):
        db.write(adapters.delete_adapter, "ansel", 2)
    assert db.write(adapters.delete_adapter, "ansel", 1).version == 1
    with pytest.raises(NotFound):
        db.write(adapters.delete_adapter, "ansel", 1)


def test_the_schema_allows_one_active_version_per_advisor(db):
    register(db, 2)
    register(db, 1, "fanho")
    db.write(adapters.activate, "fanho", 1)
    with pytest.raises(integrity_error(db.dialect), match=r"(?i)unique|duplicate key"):
        db.write(
            lambda conn: conn.execute("UPDATE adapters SET active = 1 WHERE advisor_id = 'ansel'")
        )


def test_readers_never_see_zero_or_two_active_during_swaps(db):
    register(db, 2)
    db.write(adapters.activate, "ansel", 1)
    stop = threading.Event()
    seen: list[int] = []

    def watch():
        while not stop.is_set():
            with db.read() as conn:
                seen.append(
                    conn.execute(
                        "SELECT count(*) FROM adapters WHERE advisor_id = 'ansel' AND active = 1"
                    ).fetchone()[0]
                )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(200):
            db.write(adapters.activate, "ansel", 1 + i % 2)
    finally:
        stop.set()
        watcher.join()
    assert seen and set(seen) == {1}


def test_adapter_refs_parse():
    assert adapters.parse_adapter_ref("ansel@v3") == ("ansel", 3)
    assert adapters.adapter_ref("fan-ho", 12) == "fan-ho@v12"
    for bad in ("ansel", "ansel@3", "ansel@v0", "Ansel@v1", "a@v1/../x"):
        with pytest.raises(InvalidInput, match="advisor@vN"):
            adapters.parse_adapter_ref(bad)


# --- reviews ------------------------------------------------------------------------


def test_reviews_round_trip(db, images_dir):
    h = store(db, images_dir)
    a = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    b = db.write(jobs.create_job, "fanho", h, "baseline", "tiny")
    fixed = example_critique(3)
    r1 = db.write(reviews.add_review, a.id, fixed, "maria", "too generous")
    r2 = db.write(reviews.add_review, b.id, example_critique(8))
    assert (r1.job_id, r1.advisor_id, r1.image_hash, r1.critique, r1.reviewer, r1.note) == (
        a.id,
        "ansel",
        h,
        fixed,
        "maria",
        "too generous",
    )
    with db.read() as conn:
        assert reviews.list_reviews(conn) == [r1, r2]
        assert reviews.list_reviews(conn, advisor_id="fanho") == [r2]
        assert reviews.list_reviews(conn, job_id=a.id) == [r1]
        assert reviews.get_review(conn, r1.id) == r1
    with pytest.raises(NotFound, match="no job"):
        db.write(reviews.add_review, "ghost", fixed, "maria", None)
    with pytest.raises(InvalidInput, match="Critique"):
        db.write(reviews.add_review, a.id, fixed.model_dump(), "maria", None)


def test_reviews_record_their_author_and_wait_for_an_operator(db, images_dir):
    h = store(db, images_dir)
    job = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    posted = db.write(reviews.add_review, job.id, example_critique(3), author="client:10.0.0.9")
    trusted = db.write(
        reviews.add_review,
        job.id,
        example_critique(4),
        author="token:maria",
        accepted_by="token:maria",
    )
    assert (posted.author, posted.status, posted.decided_by) == ("client:10.0.0.9", "pending", None)
    assert (trusted.status, trusted.decided_by) == ("accepted", "token:maria")
    with db.read() as conn:
        assert [r["id"] for r in reviews.training_rows(conn, "ansel")] == [trusted.id]
        assert reviews.list_reviews(conn, status="pending") == [posted]
    accepted = db.write(reviews.decide_review, posted.id, "accepted", "operator")
    assert accepted.status == "accepted" and accepted.decided_at is not None
    db.write(reviews.decide_review, trusted.id, "rejected", "operator")
    with db.read() as conn:
        assert [r["id"] for r in reviews.training_rows(conn, "ansel")] == [posted.id]
        assert reviews.recent_by(conn, "client:10.0.0.9", "0000") == (1, posted.created_at)
        assert reviews.recent_by(conn, "client:10.0.0.9", "9999") == (0, None)
    with pytest.raises(NotFound, match="no review"):
        db.write(reviews.decide_review, 999, "accepted", "operator")
    with pytest.raises(InvalidInput, match="accepted or rejected"):
        db.write(reviews.decide_review, posted.id, "pending", "operator")


def test_the_same_review_of_a_job_is_stored_once(db, images_dir):
    h = store(db, images_dir)
    job = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
    db.write(reviews.add_review, job.id, example_critique(3), author="client:a")
    with pytest.raises(reviews.DuplicateReview, match="already has this review"):
        db.write(reviews.add_review, job.id, example_critique(3), author="client:b")
    db.write(reviews.add_review, job.id, example_critique(5), author="client:a")  # another one
    with db.read() as conn:
        assert len(reviews.list_reviews(conn, job_id=job.id)) == 2
