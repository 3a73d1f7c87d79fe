"""What `mondrian train` refuses before it loads a model, the accumulation groups, and
the loss-curve SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from training_helpers import ADVISOR

from mondrian.cli.main import main
from mondrian.training.dataset import build_dataset
from mondrian.training.plot import loss_curve_svg


@pytest.fixture
def dataset(state, settings, portfolio, tmp_path):
    out = tmp_path / "ds"
    build_dataset(state, settings, ADVISOR, out, val_fraction=0)
    return out


def _train(*args):
    return main(["train", "--model", "unused", "--no-progress", *args])


def test_the_data_set_must_be_the_advisors(dataset, capsys):
    assert _train("--advisor", "fan_ho", "--dataset", str(dataset)) == 2
    assert "built for advisor 'ansel', not 'fan_ho'" in capsys.readouterr().err


def test_a_data_set_for_another_prompt_version_is_refused(dataset, capsys):
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["prompt_version"] = "0"
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    assert _train("--advisor", ADVISOR, "--dataset", str(dataset)) == 2
    assert "rebuild the data set" in capsys.readouterr().err


def test_a_missing_data_set_is_a_one_line_error(tmp_path, capsys):
    assert _train("--advisor", ADVISOR, "--dataset", str(tmp_path / "nope")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mondrian dataset build" in err


def test_an_unrelated_out_dir_is_refused(dataset, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert _train("--advisor", ADVISOR, "--dataset", str(dataset), "--out", str(out)) == 2
    assert "is not a training run" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep"


def test_bad_flags_are_user_errors(dataset, capsys):
    assert _train("--advisor", ADVISOR, "--dataset", str(dataset), "--rank", "0") == 2
    assert "--rank: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_loss_curve_is_an_svg_with_both_series():
    svg = loss_curve_svg([(1, 9.0), (2, 4.0), (3, 1.0)], [(3, 2.0)], title="ansel <r=16>")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2
    assert "ansel &lt;r=16&gt;" in svg
    with pytest.raises(ValueError):
        loss_curve_svg([])


def test_accumulation_groups_end_short_and_count_the_updates():
    from mondrian.training.config import TrainConfig
    from mondrian.training.setup import accumulation_group, total_updates

    groups = [accumulation_group(i, 5, 2) for i in range(5)]
    assert groups == [(2, False), (2, True), (2, False), (2, True), (1, True)]
    assert (
        total_updates(TrainConfig(grad_accum=2, epochs=3), 5)
        == 9
        == 3 * sum(closes for _, closes in groups)
    )
    assert [accumulation_group(i, 3, 1) for i in range(3)] == [(1, True)] * 3
