"""`mondrian analyze` on several photos, folders and several advisors, on a tiny model:
file names per job, nothing overwritten, the index, the comparison page, history's rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mondrian.backends import protocol as backend_registry
from mondrian.cli import main as cli_main
from mondrian.config import load_settings
from mondrian.reports.files import read_manifest
from mondrian.storage.bootstrap import open_state
from mondrian.storage.job_pages import page_jobs
from raw_samples import bayer_dng

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def short_backend(tiny_checkpoint_factory):
    """The tiny model with the shortest strings and lists: a critique in about a second."""
    from mondrian.backends.transformers.backend import TransformersBackend

    return TransformersBackend(str(tiny_checkpoint_factory()), max_text_chars=8, max_list_items=1)


@pytest.fixture
def cli(monkeypatch, short_backend):
    loads = []

    def create_backend(settings, **options):
        loads.append(settings.model)
        return short_backend

    monkeypatch.setattr(backend_registry, "create_backend", create_backend)

    def run(*argv: str) -> int:
        return cli_main.main(["analyze", *argv, "--no-progress"])

    run.loads = loads
    return run


def _jobs():
    with open_state(load_settings()) as db, db.read() as conn:
        return page_jobs(conn, limit=100).jobs


def test_a_folder_is_searched_recursively_for_photos_only(cli, photos_dir, tmp_path, capsys):
    folder = tmp_path / "shoot"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(photos_dir / "chelsea.jpg", folder / "chelsea.jpg")
    shutil.copy(photos_dir / "coffee.jpg", folder / "day2" / "coffee.JPG")
    (folder / "day2" / "raw.dng").write_bytes(bayer_dng(128, 96))
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden").mkdir()
    shutil.copy(photos_dir / "rocket.jpg", folder / ".hidden" / "rocket.jpg")
    out = tmp_path / "reports"

    assert cli(str(folder), "--advisor", "ansel", "--out", str(out)) == 0

    printed = capsys.readouterr().out
    for name in ("chelsea.jpg:", "coffee.JPG:", "raw.dng:", "3 critiques"):
        assert name in printed, printed
    assert "rocket" not in printed and "notes" not in printed
    entries = read_manifest(out)
    assert sorted(e.photo for e in entries) == ["chelsea.jpg", "coffee.JPG", "raw.dng"]
    for entry in entries:
        assert entry.summary == f"{Path(entry.photo).stem}-{entry.job_id[:12]}-summary.html"
        assert (out / entry.summary).stat().st_size > 1000 and (out / entry.detailed).is_file()
        for page in (entry.summary, entry.detailed):  # the photo is on both pages
            assert 'src="data:image/jpeg;base64,' in (out / page).read_text()
    index = (out / "index.html").read_text()
    assert all(f'href="{e.summary}"' in index for e in entries)
    jobs = {j.photo_name: j for j in _jobs()}
    assert jobs["raw.dng"].exif["camera"] == "Mondrian Test DNG"  # EXIF kept with the job
    assert jobs["chelsea.jpg"].report_path == str(out / jobs_summary(entries, "chelsea.jpg"))
    assert len(cli.loads) == 1  # one model for the whole run


def jobs_summary(entries, photo: str) -> str:
    return next(e.summary for e in entries if e.photo == photo)


def test_a_second_run_adds_reports_and_never_overwrites(cli, photos_dir, tmp_path, capsys):
    out = tmp_path / "reports"
    photo = str(photos_dir / "chelsea.jpg")
    assert cli(photo, "--advisor", "ansel", "--out", str(out)) == 0
    first = {p.name: p.read_bytes() for p in out.glob("chelsea-*.html")}
    assert cli(photo, "--advisor", "ansel", "--out", str(out)) == 0

    assert "-summary.html" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in out.glob("chelsea-*.html")}
    assert len(after) == 4 and all(after[name] == data for name, data in first.items())
    assert len(read_manifest(out)) == 2
    assert (out / "index.html").read_text().count("<tr data-job=") == 2


def test_several_advisors_write_one_comparison(cli, photos_dir, tmp_path, capsys):
    out = tmp_path / "reports"
    argv = [str(photos_dir / "coffee.jpg"), "--advisor", "ansel,fan_ho", "--out", str(out)]

    assert cli(*argv, "--json") == 0

    results = json.loads(capsys.readouterr().out)
    assert [r["advisor_id"] for r in results] == ["ansel", "fan_ho"]
    (comparison,) = out.glob("coffee-*-comparison.html")
    html = comparison.read_text()
    assert "Ansel Adams" in html and "Fan Ho" in html
    for result in results:
        critique = result["critique"]
        assert f"{critique['overall_score']:.2f}" in html and critique["overall_grade"] in html
    assert html.count('data-dimension="') == 8 + 2  # eight dimensions, overall, grade
    assert all(e.comparison == comparison.name for e in read_manifest(out))


def test_with_several_photos_a_broken_one_is_skipped_and_the_exit_is_2(
    cli, photos_dir, tmp_path, capsys
):
    broken = tmp_path / "broken.jpg"
    data = (photos_dir / "rocket.jpg").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "reports"

    argv = [str(photos_dir / "camera.jpg"), str(broken), "--advisor", "ansel", "--out", str(out)]
    assert cli(*argv) == 2

    captured = capsys.readouterr()
    assert f"skipped {broken}: the image is truncated or corrupt" in captured.err
    assert "1 of 2 photos could not be read" in captured.err
    assert [e.photo for e in read_manifest(out)] == ["camera.jpg"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["MISSING", "--advisor", "ansel"], "no such file"),
        (["EMPTY", "--advisor", "ansel"], "no photos in"),
        (["PHOTO", "--advisor", "ansel,nobody"], "no advisor"),
        (["BROKEN", "--advisor", "ansel"], "not an image"),
    ],
    ids=["missing", "empty-folder", "unknown-advisor", "one-broken-photo"],
)
def test_bad_input_is_refused_before_the_model_loads(
    cli, photos_dir, tmp_path, capsys, argv, message
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.jpg").write_text("not a photo")
    paths = {
        "MISSING": str(tmp_path / "missing.jpg"),
        "EMPTY": str(tmp_path / "empty"),
        "PHOTO": str(photos_dir / "chelsea.jpg"),
        "BROKEN": str(tmp_path / "broken.jpg"),
    }
    argv = [paths.get(a, a) for a in argv]

    assert cli(*argv, "--out", str(tmp_path / "r")) == 2

    assert message in capsys.readouterr().err
    assert cli.loads == []


def test_a_heic_photo_is_critiqued(cli, tmp_path, capsys):
    from pillow_heif import register_heif_opener

    register_heif_opener()
    photo = tmp_path / "IMG_0001.HEIC"
    Image.new("RGB", (96, 72), (40, 90, 160)).save(photo, format="HEIF")
    assert cli(str(photo), "--advisor", "ansel", "--out", str(tmp_path / "r"), "--json") == 0
    assert json.loads(capsys.readouterr().out)["advisor_id"] == "ansel"
    assert [e.photo for e in read_manifest(tmp_path / "r")] == ["IMG_0001.HEIC"]


def test_a_photo_file_over_the_upload_limit_is_read_up_to_the_file_limit(
    cli, photos_dir, tmp_path, monkeypatch, capsys
):
    """Photographers' files (a RAW runs to 100 MB) are bounded by MONDRIAN_MAX_FILE_BYTES on
    the command line, not by the service's upload limit."""
    photo = photos_dir / "chelsea.jpg"
    size = photo.stat().st_size
    monkeypatch.setenv("MONDRIAN_MAX_UPLOAD_BYTES", str(size // 4))
    out = tmp_path / "reports"
    assert cli(str(photo), "--advisor", "ansel", "--out", str(out)) == 0
    assert read_manifest(out), "the critique was made"

    monkeypatch.setenv("MONDRIAN_MAX_FILE_BYTES", str(size // 2))
    loads_before = len(cli.loads)
    assert cli(str(photo), "--advisor", "ansel", "--out", str(out)) == 2
    assert f"the limit is {size // 2}" in capsys.readouterr().err
    assert len(cli.loads) == loads_before, "refused before the model loaded"
