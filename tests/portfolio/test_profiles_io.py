"""Profiles as JSONL: export, curate, import (validated, all or nothing). No model here:
profiles are written directly with known critiques."""

from __future__ import annotations

import io
import json

import pytest

from mondrian.cli import main as cli_main
from mondrian.images import read_image_file
from mondrian.portfolio.profiles_io import (
    ProfilesFileInvalid,
    export_profiles,
    import_profiles,
    parse_profiles,
)
from mondrian.portfolio.retrieval import encode_embedding
from mondrian.schema import DIMENSIONS, example_critique
from mondrian.storage import images, profiles

NAMES = ("coffee", "rocket", "chelsea")


def _with_expected(critique, value: float):
    dims = critique.dimensions.model_copy(
        update={
            key: dim.model_copy(update={"expected_score": value})
            for key, dim in critique.dimensions.items()
        }
    )
    return critique.model_copy(update={"dimensions": dims})


@pytest.fixture
def indexed(db, settings, photos_dir):
    """Three portfolio images with model profiles (expected 6.8, score 7) and embeddings."""
    hashes = []

    def store(conn):
        for i, name in enumerate(NAMES):
            photo = read_image_file(photos_dir / f"{name}.jpg")
            digest = images.store_image(
                conn, settings.images_dir, photo.data, photo.mime, photo.width, photo.height
            )
            images.add_to_portfolio(conn, "ansel", digest, name)
            critique = _with_expected(example_critique(score=7), 6.8)
            embedding = encode_embedding([1.0, float(i), 0.5])
            profiles.upsert_profile(conn, "ansel", digest, critique, "model", "tiny", embedding)
            hashes.append(digest)

    db.write(store)
    return hashes


def _export(db) -> list[dict]:
    out = io.StringIO()
    count = export_profiles(db, "ansel", out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == len(rows)
    return rows


def _profiles(db):
    with db.read() as conn:
        return {p.image_hash: p for p in profiles.list_profiles(conn, "ansel")}


def test_export_then_import_round_trips_and_marks_rows_curated(db, indexed):
    rows = _export(db)
    assert [r["image_hash"] for r in rows] == indexed
    assert [r["title"] for r in rows] == list(NAMES)
    assert {r["source"] for r in rows} == {"model"}
    before = _profiles(db)

    report = import_profiles(db, "ansel", [json.dumps(r) for r in rows])

    assert (report.imported, report.created, report.replaced) == (3, 0, 3)
    after = _profiles(db)
    for digest, profile in after.items():
        assert profile.source == "curated"
        assert profile.critique == before[digest].critique  # unchanged scores keep expected
        assert profile.embedding == before[digest].embedding and profile.model == "tiny"


def test_curated_scores_and_comments_replace_the_models(db, indexed):
    rows = _export(db)
    dims = rows[1]["critique"]["dimensions"]
    dims["lighting"]["score"] = 3
    dims["lighting"]["comment"] = "Flat light; the plume has no shape."
    rows[1]["title"] = "Falcon 9 launch"
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n"  # blank lines are fine

    import_profiles(db, "ansel", text.splitlines())

    profile = _profiles(db)[indexed[1]]
    lighting = profile.critique.dimensions.lighting
    assert (lighting.score, lighting.comment) == (3, "Flat light; the plume has no shape.")
    # The person's score now counts: the model's expected score no longer matches it.
    assert lighting.expected_score is None
    assert profile.critique.dimensions.composition.expected_score == 6.8
    with db.read() as conn:
        titles = {i.image_hash: i.title for i in images.list_portfolio(conn, "ansel")}
    assert titles[indexed[1]] == "Falcon 9 launch"


def test_invalid_rows_are_reported_by_line_and_nothing_is_written(db, indexed):
    rows = _export(db)
    good = json.dumps(rows[0])
    bad_score = json.loads(json.dumps(rows[1]))
    bad_score["critique"]["dimensions"]["focus_sharpness"]["score"] = 11
    missing_dim = json.loads(json.dumps(rows[2]))
    del missing_dim["critique"]["dimensions"]["emotional_impact"]
    extra_key = {**rows[2], "rating": 5}
    unknown_image = {**rows[2], "image_hash": "0" * 64}
    lines = [
        good,  # 1
        "{not json",  # 2
        json.dumps(bad_score),  # 3
        json.dumps(missing_dim),  # 4
        "",  # 5: blank, skipped
        json.dumps(extra_key),  # 6
        json.dumps(unknown_image),  # 7
        good,  # 8: the same image twice
    ]
    before = _profiles(db)

    with pytest.raises(ProfilesFileInvalid) as caught:
        import_profiles(db, "ansel", lines)

    errors = {e.line: e.message for e in caught.value.errors}
    assert sorted(errors) == [2, 3, 4, 6, 7, 8]
    assert "not JSON" in errors[2]
    assert "focus_sharpness" in errors[3] and "less than or equal to 10" in errors[3]
    assert "emotional_impact" in errors[4]
    assert "rating" in errors[6]
    assert "not stored" in errors[7]
    assert "already on line 1" in errors[8]
    assert "nothing was imported" in caught.value.message
    assert _profiles(db) == before


def test_parse_profiles_checks_the_hash_format():
    row = {"image_hash": "ABC", "critique": example_critique().model_dump()}
    records, errors = parse_profiles([json.dumps(row)])
    assert records == [] and errors[0].line == 1 and "image_hash" in errors[0].message


def test_an_imported_profile_for_a_stored_image_joins_the_portfolio(db, indexed):
    row = _export(db)[0]
    row["critique"]["dimensions"]["composition"]["expected_score"] = 9.9  # new: cleared

    report = import_profiles(db, "fan_ho", [json.dumps(row)])

    assert (report.created, report.replaced) == (1, 0)
    with db.read() as conn:
        (profile,) = profiles.list_profiles(conn, "fan_ho")
        (item,) = images.list_portfolio(conn, "fan_ho")
    assert item.image_hash == profile.image_hash == indexed[0]
    assert profile.source == "curated" and profile.embedding is None
    assert all(d.expected_score is None for _, d in profile.critique.dimensions.items())
    assert set(profile.critique.dimensions.scores()) == set(DIMENSIONS)


def _cli(monkeypatch, *argv: str) -> int:
    return cli_main.main(list(argv))


def test_profiles_cli_exports_and_imports(db, indexed, tmp_path, monkeypatch, capsys):
    db.close()  # the CLI opens the same home itself
    path = tmp_path / "out" / "ansel.jsonl"

    assert _cli(monkeypatch, "profiles", "export", "--advisor", "ansel", str(path)) == 0
    assert "exported 3 profile(s)" in capsys.readouterr().out
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["critique"]["dimensions"]["composition"]["score"] = 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert _cli(monkeypatch, "profiles", "import", "--advisor", "ansel", str(path)) == 0
    assert "imported 3 profile(s) for ansel as curated (0 new, 3 replaced)" in (
        capsys.readouterr().out
    )

    rows[2]["critique"]["dimensions"]["lighting"]["score"] = -1
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _cli(monkeypatch, "profiles", "import", "--advisor", "ansel", str(path)) == 2
    err = capsys.readouterr().err
    assert "line 3: critique.dimensions.lighting.score" in err and "nothing was imported" in err

    assert _cli(monkeypatch, "profiles", "export", "--advisor", "nobody", str(path)) == 2
    assert _cli(monkeypatch, "profiles", "import", "--advisor", "ansel", "missing.jsonl") == 2
