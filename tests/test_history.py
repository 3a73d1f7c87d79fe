"""Past critiques: keyset pages (storage/job_pages.py), `mondrian history`, `GET /jobs`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from job_helpers import done_job
from mondrian.cli.main import main
from mondrian.errors import InvalidInput, NotFound
from mondrian.storage import jobs
from mondrian.storage.job_pages import decode_cursor, encode_cursor, page_jobs, resolve_job


@pytest.fixture
def five(db, settings):
    """Five done jobs, oldest first: ansel, fan_ho, ansel, fan_ho, ansel."""
    made = []
    for i in range(5):
        advisor = ("ansel", "fan_ho")[i % 2]
        made.append(done_job(db, settings, advisor, f"photo{i}.jpg", score=3 + i))
    return made


def test_pages_walk_every_job_once_newest_first(db, five):
    seen, cursor = [], None
    with db.read() as conn:
        while True:
            page = page_jobs(conn, limit=2, cursor=cursor)
            seen += [j.id for j in page.jobs]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == [j.id for j in reversed(five)]


def test_a_job_queued_while_paging_does_not_shift_the_pages(db, settings, five):
    with db.read() as conn:
        first = page_jobs(conn, limit=2)
    done_job(db, settings, "ansel", "late.jpg")  # newer than everything: not on later pages
    with db.read() as conn:
        second = page_jobs(conn, limit=2, cursor=first.next_cursor)
    assert [j.id for j in second.jobs] == [five[2].id, five[1].id]


def test_pages_filter_by_advisor_and_status(db, five):
    with db.read() as conn:
        ansel = page_jobs(conn, limit=10, advisor_id="ansel").jobs
        assert [j.photo_name for j in ansel] == ["photo4.jpg", "photo2.jpg", "photo0.jpg"]
        assert page_jobs(conn, limit=10, status="failed").jobs == []
        with pytest.raises(InvalidInput):
            page_jobs(conn, limit=0)
        with pytest.raises(InvalidInput):
            page_jobs(conn, status="lost")


@pytest.mark.parametrize("cursor", ["", "bm9wZQ", "!!!", encode_cursor("x", 1)[:-2]])
def test_a_cursor_we_did_not_write_is_refused(db, cursor):
    with db.read() as conn, pytest.raises(InvalidInput) as info:
        page_jobs(conn, cursor=cursor)
    assert info.value.code == "bad_cursor"


def test_cursor_round_trip():
    assert decode_cursor(encode_cursor("2026-12-01T16:00:00.123456Z", 42)) == (
        "2026-12-01T16:00:00.123456Z",
        42,
    )


def test_a_job_is_found_by_a_prefix_of_its_id(db, five):
    with db.read() as conn:
        assert resolve_job(conn, five[0].id[:12]).id == five[0].id
        assert resolve_job(conn, five[0].id.upper()).id == five[0].id
        with pytest.raises(NotFound):
            resolve_job(conn, "ffffff" if not five[0].id.startswith("ffffff") else "000000")
        with pytest.raises(InvalidInput):
            resolve_job(conn, "abc")  # too short to name one


def test_history_prints_the_table(db, five, capsys):
    assert main(["history", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "job", "photo", "advisor", "mode", "score", "report"]
    assert [line.split()[3] for line in lines[1:]] == ["photo4.jpg", "photo3.jpg", "photo2.jpg"]
    assert five[4].id[:12] in lines[1] and f"{five[4].score:.2f}" in lines[1]


def test_history_json_and_advisor_filter(db, settings, five, capsys):
    db.write(jobs.set_report_path, five[3].id, "/tmp/r/photo3-summary.html")
    assert main(["history", "--advisor", "fan_ho", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["photo"] for r in rows] == ["photo3.jpg", "photo1.jpg"]
    assert rows[0]["report_path"] == "/tmp/r/photo3-summary.html"
    assert rows[0]["mode_used"] == "baseline" and rows[0]["score"] == five[3].score
    assert set(rows[0]) >= {"id", "created_at", "advisor_id", "grade", "status", "exif"}


def test_history_on_a_fresh_machine_creates_nothing(mondrian_home, capsys):
    assert main(["history"]) == 0
    assert "no critiques yet" in capsys.readouterr().out
    assert not mondrian_home.exists()


@pytest.mark.parametrize("value", ["0", "501", "many"])
def test_history_limit_is_checked_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["history", "--limit", value])
    assert info.value.code == 2 and "--limit" in capsys.readouterr().err


# --- GET /jobs ---------------------------------------------------------------------------


@pytest.fixture
def client(settings, db):
    from backend_fakes import EchoBackend
    from mondrian.service.app import create_app

    app = create_app(settings, EchoBackend())
    # A loopback Host: the service answers only the hosts it serves (service/guards.py).
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.state = app.state.mondrian
        yield client


def test_get_jobs_pages_with_next_links(client, settings):
    state = client.state
    made = [done_job(state.db, settings, "ansel", f"p{i}.jpg", score=4 + i) for i in range(3)]
    first = client.get("/jobs", params={"limit": 2})
    assert first.status_code == 200, first.text
    body = first.json()
    assert [j["id"] for j in body["jobs"]] == [made[2].id, made[1].id]
    assert body["jobs"][0]["photo"] == "p2.jpg" and body["jobs"][0]["score"] == made[2].score
    assert body["jobs"][0]["links"]["report"] == f"/jobs/{made[2].id}/report"
    second = client.get(body["next"]).json()
    assert [j["id"] for j in second["jobs"]] == [made[0].id] and second["next"] is None
    only = client.get("/jobs", params={"advisor": "fan_ho"}).json()
    assert only == {"jobs": [], "next": None}


@pytest.mark.parametrize(
    ("params", "status"),
    [({"limit": 0}, 422), ({"limit": 501}, 422), ({"cursor": "nope"}, 422), ({"status": "x"}, 422)],
)
def test_get_jobs_refuses_bad_parameters_as_json(client, params, status):
    response = client.get("/jobs", params=params)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_jobs_of_one_clock_tick_page_newest_first_by_rowid(db, settings):
    made = [done_job(db, settings, "ansel", f"t{i}.jpg") for i in range(3)]
    db.write(lambda conn: conn.execute("UPDATE jobs SET created_at = '2026-01-01T00:00:00Z'"))
    seen, cursor = [], None
    with db.read() as conn:
        for _ in range(3):
            page = page_jobs(conn, limit=1, cursor=cursor)
            seen += [j.id for j in page.jobs]
            cursor = page.next_cursor
    assert seen == [j.id for j in reversed(made)] and cursor is None
