"""`mondrian dataset build`: targets validated against the schema and the generation
bounds, the exact lora-mode prompt, a split by image, deterministic output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from training_helpers import ADVISOR, add_profile, short_critique

from mondrian.cli.main import main
from mondrian.errors import InvalidInput
from mondrian.facts import FACTS, FACTS_VERSION
from mondrian.prompts import MEASURED_HEADER, PROMPT_VERSION, critique_prompt
from mondrian.schema import SCHEMA_VERSION, Critique, Fact, example_critique
from mondrian.storage import jobs, reviews
from mondrian.storage.advisors import require_advisor
from mondrian.training.dataset import build_dataset
from mondrian.training.dataset_files import load_split, read_manifest
from mondrian.training.targets import check_target, split_images, target_payload, target_text


def _rows(out, split):
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def _with_text(critique: Critique, **changes) -> Critique:
    data = critique.model_dump()
    data.update(changes)
    return Critique.model_validate(data)


def test_build_writes_messages_images_and_manifest(state, settings, portfolio, tmp_path):
    model_hash = add_profile(state, settings, 4, source="model")
    out = tmp_path / "ds"
    manifest = build_dataset(state, settings, ADVISOR, out, val_fraction=0.4, augment=2, seed=3)

    assert manifest["advisor_id"] == ADVISOR
    assert manifest["sources"] == {"curated": 4, "model": 1, "review": 0}
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["prompt_version"] == PROMPT_VERSION
    assert manifest["facts_version"] == FACTS_VERSION
    assert manifest["rejected"]["count"] == 0
    splits = manifest["splits"]
    assert splits["validation"]["images"] == 2 and splits["train"]["images"] == 3
    assert splits["train"]["examples"] == 3 * 3  # original + 2 augmentations each
    assert splits["validation"]["examples"] == 2  # validation uses the originals only
    # The file names `datasets.load_dataset(DIR)` and mlx-vlm's folder loader read.
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["train.jsonl", "validation.jsonl"]
    assert read_manifest(out)["data_sha256"] == manifest["data_sha256"]

    with state.read() as conn:
        advisor = require_advisor(conn, ADVISOR)
    sides: dict[str, set[str]] = {"train": set(), "validation": set()}
    facts_by_image: dict[str, list[list[Fact]]] = {}
    for split in ("train", "validation"):
        for row in _rows(out, split):
            assert set(row) == {"messages", "images", "mondrian"}
            # The prompt's "Measured:" block is written from the facts the row records.
            facts = [Fact.model_validate(f) for f in row["mondrian"]["facts"]]
            assert [f.name for f in facts] == [s.name for s in FACTS][: len(facts)]
            facts_by_image.setdefault(row["mondrian"]["image_hash"], []).append(facts)
            expected_prompt = critique_prompt(advisor, Image.new("RGB", (1, 1)), facts=facts)
            assert MEASURED_HEADER in expected_prompt.user
            assert row["messages"][:2] == expected_prompt.messages()
            assert row["messages"][1]["content"][0] == {"type": "image"}
            assistant = row["messages"][2]
            assert assistant["role"] == "assistant"
            text = assistant["content"][0]["text"]
            # Exactly what the grammar makes the model write: compact, schema order.
            assert text == json.dumps(json.loads(text), separators=(",", ":"))
            assert list(json.loads(text)) == [
                "image_description",
                "dimensions",
                "strengths",
                "improvements",
            ]
            Critique.model_validate_json(text)
            (image,) = row["images"]
            # Absolute: TRL's collator opens the path from whatever the working directory is.
            assert image.startswith(f"{out}/images/") and Path(image).is_file()
            sides[split].add(row["mondrian"]["image_hash"])
            if row["mondrian"]["augmentation"]:
                assert split == "train"
    assert not sides["train"] & sides["validation"]
    # Each augmentation is measured on its own pixels, not given its original's facts.
    augmented = [variants for variants in facts_by_image.values() if len(variants) == 3]
    assert augmented and all(v[0] != v[1] and v[0] != v[2] for v in augmented)
    assert model_hash in sides["train"] | sides["validation"]
    # Every file is listed with the hash of its content; a split file's content is its
    # text with the image paths relative to the folder (the folder's path is no content).
    for name, digest in manifest["files"].items():
        data = (out / name).read_bytes()
        if name.endswith(".jsonl"):
            data = data.replace(f"{out}/".encode(), b"")
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_target_text_round_trips_the_critique():
    critique = short_critique(2)
    text = target_text(critique)
    assert Critique.model_validate_json(text) == critique
    assert "expected_score" not in text and "overall" not in text
    assert list(target_payload(critique)["dimensions"]["lighting"]) == [
        "score",
        "comment",
        "recommendation",
    ]


def test_check_target_names_what_the_grammar_cannot_write():
    assert check_target(example_critique()) == []
    quoted = _with_text(example_critique(), image_description='A "quoted" word')
    assert any("characters the grammar cannot write" in r for r in check_target(quoted))
    accented = _with_text(example_critique(), image_description="Brassaï at night")
    assert any("'ï'" in r for r in check_target(accented))
    reasons = check_target(example_critique(), max_text_chars=24, max_list_items=0)
    assert any(r.startswith("image_description: ") and "at most 24" in r for r in reasons)
    assert any(r.startswith("strengths: 1 items, at most 0") for r in reasons)


def test_invalid_targets_are_reported_and_left_out(state, settings, portfolio, tmp_path):
    bad_quote = add_profile(
        state, settings, 5, _with_text(short_critique(5), image_description='A "red" field')
    )
    bad_long = add_profile(state, settings, 6, _with_text(short_critique(6), strengths=["x" * 30]))
    # A row the current schema rejects outright (written around the storage API).
    broken = add_profile(state, settings, 7)

    def corrupt(conn):
        row = conn.execute(
            "SELECT critique FROM profiles WHERE image_hash = ?", (broken,)
        ).fetchone()
        data = json.loads(row["critique"])
        data["dimensions"]["lighting"]["score"] = 11
        conn.execute(
            "UPDATE profiles SET critique = ? WHERE image_hash = ?", (json.dumps(data), broken)
        )

    state.write(corrupt)
    warnings: list[str] = []
    out = tmp_path / "ds"
    manifest = build_dataset(
        state, settings, ADVISOR, out, val_fraction=0, max_text_chars=24, warn=warnings.append
    )
    rejected = {item["image_hash"]: item["reasons"] for item in manifest["rejected"]["items"]}
    assert set(rejected) == {bad_quote, bad_long, broken}
    assert manifest["rejected"]["count"] == 3 and len(warnings) == 3
    assert any("cannot write: '\"'" in r for r in rejected[bad_quote])
    assert any(r.startswith("strengths[0]: 30 characters, at most 24") for r in rejected[bad_long])
    assert any(r.startswith("dimensions.lighting.score") for r in rejected[broken])
    kept = {row["mondrian"]["image_hash"] for row in _rows(out, "train")}
    assert kept == set(portfolio)


def test_reviews_are_targets_on_request_and_outrank_profiles(state, settings, portfolio, tmp_path):
    reviewed = portfolio[0]
    new_image = add_profile(state, settings, 5)
    state.write(lambda c: c.execute("DELETE FROM profiles WHERE image_hash = ?", (new_image,)))
    corrected = short_critique(9)
    for image_hash in (reviewed, new_image):
        job = state.write(jobs.create_job, ADVISOR, image_hash, "baseline", "tiny")
        state.write(reviews.add_review, job.id, corrected, "tester", accepted_by="operator")
    # A pending review (no one vouched for it) and a rejected one are never targets.
    job = state.write(jobs.create_job, ADVISOR, new_image, "baseline", "tiny")
    pending = state.write(reviews.add_review, job.id, short_critique(2), "anyone")
    rejected = state.write(reviews.add_review, job.id, short_critique(3), "anyone")
    state.write(reviews.decide_review, rejected.id, "rejected", "operator")
    assert pending.status == "pending"

    without = build_dataset(state, settings, ADVISOR, tmp_path / "a", val_fraction=0)
    assert without["sources"] == {"curated": 4, "model": 0, "review": 0}

    out = tmp_path / "b"
    manifest = build_dataset(state, settings, ADVISOR, out, val_fraction=0, include_reviews=True)
    assert manifest["sources"] == {"curated": 3, "model": 0, "review": 2}
    assert manifest["superseded"]["count"] == 1
    assert manifest["superseded"]["items"][0]["image_hash"] == reviewed
    targets = {
        r["mondrian"]["image_hash"]: r["messages"][2]["content"][0]["text"]
        for r in _rows(out, "train")
    }
    assert targets[reviewed] == targets[new_image] == target_text(corrected)


def test_same_seed_same_content(state, settings, portfolio, tmp_path):
    first = build_dataset(state, settings, ADVISOR, tmp_path / "a", augment=1, seed=5)
    second = build_dataset(state, settings, ADVISOR, tmp_path / "b", augment=1, seed=5)
    third = build_dataset(state, settings, ADVISOR, tmp_path / "c", augment=1, seed=6)
    # Two folders: the files name different absolute paths, the content is the same.
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (
        tmp_path / "b" / "train.jsonl"
    ).read_bytes()
    assert first["files"] == second["files"]
    assert first["data_sha256"] == second["data_sha256"] != third["data_sha256"]


def test_a_moved_data_set_still_reads(state, settings, portfolio, tmp_path):
    built = build_dataset(state, settings, ADVISOR, tmp_path / "a", val_fraction=0.25)
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    (tmp_path / "a").rename(moved)
    assert read_manifest(moved)["data_sha256"] == built["data_sha256"]
    for split in ("train", "validation"):
        for record in load_split(moved, split):
            assert Path(record["images"][0]).is_file()
            assert Path(record["images"][0]).is_relative_to(moved)


def test_format_1_data_sets_still_read(state, settings, portfolio, tmp_path):
    """A data set built before the rename: val.jsonl, paths relative to the folder."""
    out = tmp_path / "ds"
    build_dataset(state, settings, ADVISOR, out, val_fraction=0.25)
    manifest = json.loads((out / "manifest.json").read_text())
    files = {}
    for split, old_name in (("train", "train.jsonl"), ("validation", "val.jsonl")):
        text = (out / manifest["splits"][split]["file"]).read_text()
        (out / manifest["splits"][split]["file"]).unlink()
        (out / old_name).write_text(text.replace(f"{out}/", ""))
        files[old_name] = hashlib.sha256((out / old_name).read_bytes()).hexdigest()
        manifest["splits"][split]["file"] = old_name
    manifest["splits"]["val"] = manifest["splits"].pop("validation")
    manifest["format"] = "mondrian-dataset/1"
    manifest["files"] = files
    (out / "manifest.json").write_text(json.dumps(manifest))

    assert set(read_manifest(out)["splits"]) == {"train", "validation"}
    for split in ("val", "validation"):
        (record,) = load_split(out, split)
        assert Path(record["images"][0]).is_file()


def test_split_is_by_image_seeded_and_order_free():
    hashes = [f"{i:064x}" for i in range(10)]
    train, val = split_images(hashes, 0.2, seed=1)
    assert len(val) == 2 and not train & val and train | val == set(hashes)
    assert split_images(list(reversed(hashes)), 0.2, seed=1) == (train, val)
    assert split_images(hashes, 0.2, seed=2) != (train, val)
    # Two images and a small fraction still give each side one image; one image trains.
    assert [len(s) for s in split_images(hashes[:2], 0.05, 0)] == [1, 1]
    assert [len(s) for s in split_images(hashes[:1], 0.5, 0)] == [1, 0]
    with pytest.raises(InvalidInput):
        split_images(hashes, 1.0, 0)


def test_out_dir_is_replaced_only_when_it_is_a_data_set(state, settings, portfolio, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        build_dataset(state, settings, ADVISOR, other)
    with pytest.raises(InvalidInput, match="not a Mondrian data set"):
        build_dataset(state, settings, ADVISOR, other, force=True)
    assert (other / "keep.txt").read_text() == "mine"

    out = tmp_path / "ds"
    build_dataset(state, settings, ADVISOR, out, seed=1)
    manifest = build_dataset(state, settings, ADVISOR, out, seed=2, force=True)
    assert read_manifest(out)["seed"] == 2 == manifest["seed"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_changed_split_file_is_detected(state, settings, portfolio, tmp_path):
    out = tmp_path / "ds"
    build_dataset(state, settings, ADVISOR, out, val_fraction=0)
    assert len(load_split(out, "train")) == 4
    with (out / "train.jsonl").open("a") as fh:
        fh.write("\n")
    with pytest.raises(InvalidInput, match="changed"):
        read_manifest(out)


def test_cli_builds_and_reports(state, settings, portfolio, tmp_path, capsys):
    add_profile(state, settings, 5, _with_text(short_critique(5), image_description="Caf\u00e9"))
    out = tmp_path / "ds"
    code = main(["dataset", "build", "--advisor", ADVISOR, "--out", str(out), "--augment", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert "train 6 examples (3 images), validation 1 examples (1 images)" in captured.out
    assert "rejected target (curated" in captured.err and "'é'" in captured.err
    assert "1 invalid target(s) left out" in captured.err


def test_cli_without_targets_is_a_one_line_error(state, capsys, tmp_path):
    code = main(["dataset", "build", "--advisor", ADVISOR, "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "no valid training targets" in err
    assert not (tmp_path / "ds").exists()
