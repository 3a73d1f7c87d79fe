"""`mondrian reviews list|accept|reject`: the operator decides which reviews train."""

from __future__ import annotations

import json

from mondrian.cli.main import main
from mondrian.config import load_settings
from mondrian.schema import example_critique
from mondrian.storage import images, jobs, reviews
from mondrian.storage.bootstrap import open_state

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _pending_reviews(n: int) -> list[int]:
    settings = load_settings()
    with open_state(settings) as db:
        h = db.write(images.store_image, settings.images_dir, PNG, "image/png", 4, 3)
        job = db.write(jobs.create_job, "ansel", h, "baseline", "tiny")
        return [
            db.write(reviews.add_review, job.id, example_critique(i), author="client:1.2.3.4").id
            for i in range(n)
        ]


def test_list_accept_reject(capsys):
    first, second, third = _pending_reviews(3)
    assert main(["reviews", "accept", str(first)]) == 0
    assert main(["reviews", "reject", str(second)]) == 0
    capsys.readouterr()
    assert main(["reviews", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["status"]) for r in rows] == [
        (first, "accepted"),
        (second, "rejected"),
        (third, "pending"),
    ]
    assert rows[0]["decided_by"].startswith("cli:") and rows[0]["author"] == "client:1.2.3.4"
    assert main(["reviews", "list", "--status", "pending"]) == 0
    out = capsys.readouterr().out
    assert str(third) in out and "client:1.2.3.4" in out
    with open_state(load_settings()) as db, db.read() as conn:
        assert [r["id"] for r in reviews.training_rows(conn, "ansel")] == [first]


def test_an_unknown_id_changes_nothing(capsys):
    (only,) = _pending_reviews(1)
    assert main(["reviews", "accept", str(only), "999"]) == 2
    assert "no review 999" in capsys.readouterr().err
    with open_state(load_settings()) as db, db.read() as conn:
        assert reviews.get_review(conn, only).status == "pending"


def test_nothing_to_list_on_a_fresh_home(capsys, mondrian_home):
    assert main(["reviews", "list"]) == 0
    assert "no reviews" in capsys.readouterr().out
    assert not mondrian_home.exists()
