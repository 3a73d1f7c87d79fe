"""The README says true things: its grade table and its commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


# --- the contract docs (docs/critique.md, modes.md, adapter-format.md, cli.md, http.md,
# storage.md): their reference sections are rendered from the code by docs_reference.py.

CONTRACT_DOCS = {
    "critique.md": {"critique-fields", "grade-table"},
    "modes.md": {"mode-names"},
    "adapter-format.md": {"adapter-files", "adapter-meta"},
    "cli.md": {"cli"},
    "http.md": {"http"},
    "storage.md": {"storage"},
    "configuration.md": {"settings"},
    "advisors.md": {"advisor-fields", "advisor-template"},
    "facts.md": {"facts"},
}
DOCS = Path(__file__).parents[1] / "docs"


@pytest.mark.parametrize("doc", sorted(CONTRACT_DOCS))
def test_a_contract_docs_generated_sections_are_what_the_code_renders(doc):
    from docs_reference import SECTIONS, sections_in

    text = (DOCS / doc).read_text(encoding="utf-8")
    sections = sections_in(text)
    assert set(sections) == CONTRACT_DOCS[doc]
    for name, body in sections.items():
        assert body == "\n" + SECTIONS[name]() + "\n", (
            f"docs/{doc} section {name!r} is stale: run `make docs`"
        )


def test_every_cli_command_and_argument_has_help():
    from docs_reference import walk_commands

    missing = [
        f"{' '.join(path)}: {action.dest}"
        for path, parser, about in walk_commands(build_parser())
        for action in parser._actions
        if not action.help
    ]
    undescribed = [" ".join(path) for path, _, about in walk_commands(build_parser()) if not about]
    assert missing == [] and undescribed == []


def test_the_modes_doc_describes_every_mode_and_policy():
    from mondrian.modes import Mode, Policy

    text = (DOCS / "modes.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| `")]
    assert rows == [f"`{m}`" for m in Mode] + [f"`{p}`" for p in Policy]


def test_docs_cite_only_files_that_exist():
    root = Path(__file__).parents[1]
    for doc in [*DOCS.glob("*.md"), root / "README.md"]:
        text = doc.read_text(encoding="utf-8")
        for cited in re.findall(
            r"`?((?:src/mondrian|docs|tests|bench)/[\w/.-]+\.(?:py|md|toml))", text
        ):
            assert (root / cited).exists(), f"{doc.name} cites {cited}, which does not exist"
