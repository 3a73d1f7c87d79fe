"""The README says true things: its grade table and its commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from mondrian.cli.main import build_parser
from mondrian.schema import GRADE_TABLE

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_grade_table_matches_the_code():
    rows = [
        line.strip()
        for line in README.splitlines()
        if line.strip().startswith(("| score", "| grade"))
    ]
    lows = [float(cell) for cell in rows[0].strip("|").split("|")[1:]]
    grades = [cell.strip() for cell in rows[1].strip("|").split("|")[1:]]
    assert list(zip(lows, grades, strict=True)) == [(low, g) for low, g in GRADE_TABLE]


def test_readme_has_exactly_the_two_setup_commands():
    block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_commands_exist_in_the_cli():
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices)
    for command in re.findall(r"`mondrian ([a-z-]+)", README):
        assert command in known, command


def test_the_architecture_docs_layers_are_the_layering_tests():
    from test_layering import LAYERS

    doc = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"```layers\n(.*?)```", doc, re.S).group(1)
    documented = {
        part: int(rank)
        for rank, *parts in (line.split() for line in block.splitlines() if line.strip())
        for part in parts
    }
    assert documented == LAYERS
