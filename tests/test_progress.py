"""What a user sees while things take time: the model-load line (backends/loading.py)."""

from __future__ import annotations

import re

from mondrian.backends.loading import announce_load, human_bytes, model_bytes


def test_load_line_names_the_model_its_size_and_the_time(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * 2_500_000)
    (model / "config.json").write_text("{}")
    with announce_load(str(model)):
        # Before the load finishes, the first line is already out.
        assert capsys.readouterr().err == f"mondrian: loading model {model} (2.5 MB on disk) ...\n"
    err = capsys.readouterr().err
    assert re.fullmatch(r"mondrian: model loaded in \d+\.\d s\n", err)


def test_hub_id_sized_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    blobs = tmp_path / "models--Org--Model" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc").write_bytes(b"x" * 1500)
    assert model_bytes("Org/Model") == 1500
    assert model_bytes("Org/Other") is None


def test_uncached_hub_id_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with announce_load("Org/Absent"):
        pass
    assert "loading model Org/Absent (not in the local cache) ..." in capsys.readouterr().err


def test_human_bytes():
    assert human_bytes(999) == "999 B"
    assert human_bytes(7_510_000_000) == "7.5 GB"
    assert human_bytes(3_200_000_000_000) == "3200.0 GB"
