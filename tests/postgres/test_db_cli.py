"""`mondrian db migrate|check|copy` against a real PostgreSQL: a SQLite state with a row in
every table copied without loss (counts, row digests and image hashes verified), and the
clear refusals (a non-empty target, a bad URL, a server that is not there)."""

from __future__ import annotations

import pytest

from mondrian.cli.main import main
from mondrian.config import load_settings
from mondrian.schema import example_critique
from mondrian.storage import adapters, images, job_leases, jobs, profiles, reviews
from mondrian.storage.bootstrap import open_state
from mondrian.storage.copy import TABLES
from mondrian.storage.migrations import MIGRATIONS
from mondrian.storage.postgres import PostgresDatabase

pytestmark = pytest.mark.postgres

PNG = b"\x89PNG\r\n\x1a\n" + b"copy" * 40


def _fill_sqlite_state() -> dict[str, int]:
    settings = load_settings()
    with open_state(settings) as db:
        digest = db.write(images.store_image, settings.images_dir, PNG, "image/png", 4, 3)
        db.write(images.add_to_portfolio, "ansel", digest, "Moonrise")
        db.write(
            profiles.upsert_profile,
            "ansel",
            digest,
            example_critique(),
            "curated",
            None,
            b"\x00\x01",
        )
        made = [db.write(jobs.create_job, "ansel", digest, "baseline", "tiny") for _ in range(3)]
        db.write(job_leases.claim_next_job, owner="host:1")
        db.write(jobs.fail_job, made[1].id, "a reason")
        db.write(reviews.add_review, made[0].id, example_critique(6), author="client:1")
        db.write(adapters.register_adapter, "ansel", "/adapters/ansel/v1", "tiny", {"k": 1})
        with db.read() as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t, _ in TABLES}


def test_copy_moves_every_row_and_verifies_it(pg_server, capsys):
    counts = _fill_sqlite_state()
    assert all(counts.values()), counts  # a row in every table
    url = pg_server.fresh_database()
    assert main(["db", "copy", "--to", url]) == 0
    out = capsys.readouterr().out
    for table, n in counts.items():
        assert f"  {table:<17} {n:>7} rows  verified" in out, out
    assert "images: 1 files hash to their names" in out
    # Not moved without --shared-dir: the line says where the row still points.
    assert "adapters: 1 versions not moved: their rows still point into /adapters;" in out
    with PostgresDatabase(url) as db, db.read() as conn:
        copied = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t, _ in TABLES}
        page = [j.id for j in jobs.list_jobs(conn)]
        review = reviews.list_reviews(conn)[0]
        embedding = profiles.get_profile(conn, "ansel", review.image_hash).embedding
    assert copied == counts and len(page) == 3 and embedding == b"\x00\x01"
    # The identity sequences moved past the copied ids: a new review gets a new id.
    with PostgresDatabase(url) as db:
        job_id = page[0]
        added = db.write(reviews.add_review, job_id, example_critique(3), author="client:2")
    assert added.id > review.id
    # A second copy into the same database is refused: it is not empty any more.
    assert main(["db", "copy", "--to", url]) == 2
    assert "target database is not empty" in capsys.readouterr().err


def test_migrate_and_check_report_the_level(pg_server, monkeypatch, capsys):
    url = pg_server.fresh_database()
    monkeypatch.setenv("MONDRIAN_DATABASE_URL", url)
    assert main(["db", "migrate"]) == 0
    known = len(MIGRATIONS)  # every migration, on a new database
    assert f"applied {known} migration(s)" in capsys.readouterr().out
    assert main(["db", "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["db", "check"]) == 0
    out = capsys.readouterr().out
    assert "reachable, PostgreSQL" in out and f"{known} applied of {known} known" in out


def test_bad_urls_and_unreachable_servers_are_one_clear_line(pg_server, tmp_path, capsys):
    _fill_sqlite_state()
    assert main(["db", "copy", "--to", "mysql://somewhere/db"]) == 2
    assert "--to must be a postgresql:// URL" in capsys.readouterr().err
    gone = f"postgresql://mondrian:s3cret@/db?host={tmp_path}"
    assert main(["db", "copy", "--to", gone]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mondrian: error: cannot connect to") and "s3cret" not in err
    assert "Traceback" not in err
