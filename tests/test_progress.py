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
    with announce_load(str(tmp_path / "gone")):
        pass
    assert f"loading model {tmp_path / 'gone'} (no such folder) ..." in capsys.readouterr().err


def test_human_bytes():
    assert human_bytes(999) == "999 B"
    assert human_bytes(7_510_000_000) == "7.5 GB"
    assert human_bytes(3_200_000_000_000) == "3200.0 GB"


# --- a service job's progress (service/progress.py) ----------------------------------------


def test_progress_follows_the_expected_length_and_never_reaches_one():
    from mondrian.service.progress import MAX_RUNNING, progress_value

    expected = 300
    values = [progress_value(tokens, expected) for tokens in range(0, 3001, 10)]
    assert values == sorted(values) and values[0] == 0.0
    assert all(v < 1.0 for v in values) and max(values) <= MAX_RUNNING
    # Half the expected length reads about half, not a sixth (300 of a 1,800 budget).
    assert 0.45 < progress_value(150, expected) < 0.55
    # Past the expected length it still moves, ever more slowly.
    assert progress_value(300, expected) < progress_value(400, expected) < MAX_RUNNING
    # No jump where the linear part meets the tail.
    assert abs(progress_value(241, expected) - progress_value(239, expected)) < 0.01


def test_expected_tokens_is_the_recent_median_per_mode():
    from mondrian.service.progress import ExpectedTokens

    expected = ExpectedTokens(budget=1800)
    assert expected.for_mode("baseline") == 900  # before any job: half the budget
    for tokens in (300, 320, 1700, 310):
        expected.record("baseline", tokens)
    assert expected.for_mode("baseline") == 315  # one long answer does not pull it up
    assert expected.for_mode("rag") == 900  # each mode on its own
    expected.record("rag", 0)  # a job that counted no token teaches nothing
    assert expected.for_mode("rag") == 900


# --- the demo's bars and its "Next:" lines (src/mondrian/demo/) ----------------------------


def test_demo_eval_bars_draw_on_stderr_and_hide_with_no_progress(capsys):
    from mondrian.demo.progress import EvalBars, progress_bar

    with EvalBars("validation", enabled=True) as bars:
        for done in (1, 2, 3):
            bars.update("base", done, 3)
        bars.update("adapter", 1, 3)
    err = capsys.readouterr().err
    assert "validation: base" in err and "validation: adapter" in err and "ex/s" in err
    assert bars.seen == {"base": 3, "adapter": 1}
    assert bars.bars["base"].n == 3 and bars.bars["adapter"].n == 1
    with EvalBars("train", enabled=False) as quiet:
        quiet.update("base", 1, 2)
    with progress_bar(4, "indexing", "img", enabled=False) as bar:
        bar.update(4)
    assert capsys.readouterr().err == ""
    with progress_bar(2, "indexing", "img", enabled=True) as bar:
        bar.update(2)
    assert "indexing" in capsys.readouterr().err


def test_next_lines_name_the_venv_script_when_mondrian_is_not_on_path(tmp_path, monkeypatch):
    from mondrian.demo import summary

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "mondrian").write_text("#!/bin/sh\n")
    monkeypatch.setattr(summary.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(summary.shutil, "which", lambda _name: None)  # no venv activated
    monkeypatch.chdir(tmp_path)
    assert summary.mondrian_command() == ".venv/bin/mondrian"  # what `make demo` prints
    lines: list[str] = []
    demo = summary.DemoSummary(
        workdir=tmp_path / "demo", model="m", tiny=True, config=tmp_path / "c", advisor="ansel"
    )
    summary.print_finish(demo, lines.append)
    next_lines = "\n".join(lines).split("Next:", 1)[1]
    assert "    .venv/bin/mondrian analyze PHOTO" in next_lines
    assert "    .venv/bin/mondrian serve" in next_lines


def test_next_lines_say_plain_mondrian_when_it_is_the_one_on_path(tmp_path, monkeypatch):
    from mondrian.demo import summary

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mondrian"
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(summary.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(summary.shutil, "which", lambda _name: str(script))
    assert summary.mondrian_command() == "mondrian"
