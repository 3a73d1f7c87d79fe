"""The reference parts of docs/, generated from the code they describe.

A contract doc (docs/critique.md, modes.md, adapter-format.md, cli.md, http.md, storage.md,
configuration.md, advisors.md, facts.md) is prose written by hand around sections marked

    <!-- generated: NAME -->
    ...
    <!-- end: NAME -->

whose text this module renders from the code: the critique's fields from `Critique`, the
adapter metadata from `AdapterMeta`, every command and flag from the CLI's parser, every
endpoint from the service's OpenAPI document, every table and column from the migrations,
every setting from `Settings`, the advisor file's fields and template from `Advisor`.
tests/test_docs.py fails when a section differs from what the code renders, and
`make docs` (this file run as a script) rewrites the sections in place.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S
)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- the critique ------------------------------------------------------------------------


def _type_of(node: dict[str, Any]) -> str:
    if "anyOf" in node:
        return " or ".join(_type_of(n) for n in node["anyOf"])
    if node.get("type") == "array":
        return f"list of {_type_of(node.get('items', {}))}"
    return str(node.get("type", "object"))


def _bounds(node: dict[str, Any]) -> str:
    options = node.get("anyOf", [node])
    parts = []
    for option in options:
        for key, label in (("minimum", ">="), ("maximum", "<=")):
            if key in option:
                parts.append(f"{label} {option[key]}")
        for key, label in (("minLength", "min chars"), ("maxLength", "max chars")):
            if key in option:
                parts.append(f"{label} {option[key]}")
        if "maxItems" in node:
            parts.append(f"max items {node['maxItems']}")
        if option.get("items", {}).get("maxLength"):
            parts.append(f"item max chars {option['items']['maxLength']}")
    return ", ".join(dict.fromkeys(parts))


def critique_fields() -> str:
    from mondrian.schema import DIMENSIONS, Critique

    schema = Critique.model_json_schema()
    defs = schema["$defs"]
    rows: list[tuple[object, ...]] = []

    def walk(properties: dict[str, Any], required: list[str], prefix: str) -> None:
        for name, node in properties.items():
            ref = node.get("$ref")
            if ref is not None:
                target = defs[ref.rsplit("/", 1)[-1]]
                if name == "dimensions":
                    rows.append((f"`{prefix}dimensions`", "object", "", "model", "the 8 below"))
                    dim = defs["DimensionScore"]
                    walk(dim["properties"], dim.get("required", []), f"{prefix}dimensions.DIM.")
                    continue
                walk(target["properties"], target.get("required", []), f"{prefix}{name}.")
                continue
            writer = "Mondrian" if node.get("computed") else "model"
            rows.append(
                (
                    f"`{prefix}{name}`",
                    _type_of(node),
                    _bounds(node),
                    writer,
                    node.get("description", "")
                    + ("" if name in required or node.get("computed") else " (optional)"),
                )
            )

    walk(schema["properties"], schema.get("required", []), "")
    table = _table(("field", "type", "bounds", "written by", "meaning"), rows)
    dims = ", ".join(f"`{d}`" for d in DIMENSIONS)
    return f"{table}\n`DIM` is each of the eight dimensions, in this order: {dims}.\n"


def grade_table() -> str:
    from mondrian.schema import GRADE_TABLE

    return _table(("overall score at least", "grade"), [(low, g) for low, g in GRADE_TABLE])


def mode_names() -> str:
    from mondrian.modes import FALLBACK_ORDER, Mode

    order = " → ".join(f"`{m}`" for m in FALLBACK_ORDER)
    names = ", ".join(f"`{m}`" for m in Mode)
    return f"Modes: {names}. Fallback order: {order}.\n"


# --- the adapter format ------------------------------------------------------------------


def adapter_files() -> str:
    from mondrian import adapter_format as af

    rows = [
        (f"`{af.ADAPTER_CONFIG}`", "PEFT", "yes", "LoRA rank, alpha, target modules"),
        (f"`{af.ADAPTER_WEIGHTS}`", "PEFT", "yes", "the LoRA weights (safetensors only)"),
        (f"`{af.ADAPTER_META}`", "Mondrian", "yes", "`AdapterMeta`, below"),
        (f"`{af.LOSS_CURVE}`", "training", "no", "the loss curve, for people"),
    ]
    assert {r[0].strip("`") for r in rows if r[2] == "yes"} == set(af.REQUIRED_FILES)
    return _table(("file", "written by", "required", "holds"), rows)


def adapter_meta() -> str:
    from mondrian.adapter_format import META_FORMAT, AdapterMeta

    rows = []
    for name, field in AdapterMeta.model_fields.items():
        annotation = str(field.annotation).replace("typing.", "")
        annotation = re.sub(r"<class '(\w+)'>", r"\1", annotation)
        rows.append((f"`{name}`", annotation, field.description or ""))
    table = _table(("key", "type", "meaning"), rows)
    return f"{table}\nA file written by Mondrian has `format` = `{META_FORMAT}`.\n"


# --- the CLI -----------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (its parser, its one-line help). argparse has no public way to list them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return {name: (child, helps.get(name, "")) for name, child in action.choices.items()}
    return {}


def walk_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help_text: str = ""
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every runnable command: (its words, its parser, its description or one-line help)."""
    children = _subcommands(parser)
    if path and not children:
        yield path, parser, parser.description or help_text
    for name, (child, child_help) in children.items():
        yield from walk_commands(child, (*path, name), child_help)


def cli_reference() -> str:
    from mondrian.cli.common import default_note
    from mondrian.cli.main import build_parser

    out = []
    for path, parser, about in walk_commands(build_parser()):
        out.append(f"### `mondrian {' '.join(path)}`\n\n{about}\n")
        rows = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = ", ".join(action.option_strings) or (action.metavar or action.dest)
            help_text = (action.help or "").replace("%%", "%") + default_note(action)
            rows.append((f"`{name}`", help_text))
        if rows:
            out.append(_table(("argument", "meaning"), rows))
    return "\n".join(out)


def cli_commands() -> list[str]:
    from mondrian.cli.main import build_parser

    return [" ".join(path) for path, _, _ in walk_commands(build_parser())]


# --- HTTP --------------------------------------------------------------------------------


def http_reference() -> str:
    from mondrian.config import Settings
    from mondrian.service.app import create_app

    with tempfile.TemporaryDirectory() as home:  # the app's lifespan never runs here
        spec = create_app(Settings(home=Path(home))).openapi()
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(sorted(op.get("responses", {})))
            rows.append((f"`{method.upper()} {path}`", op.get("summary", ""), codes))
    return _table(("endpoint", "what", "statuses"), rows)


# --- settings and the config file -------------------------------------------------------


def settings_reference() -> str:
    from mondrian.config import Settings, default_of, env_names, toml_value

    rows = []
    for name, info in Settings.model_fields.items():
        default = default_of(info)
        shown = "unset" if default is None else f"`{toml_value(default)}`"
        env = ", ".join(f"`{n}`" for n in env_names(name, info))
        rows.append((f"`{name}`", env, shown, info.description or ""))
    return _table(("setting (config.toml key)", "environment", "default", "meaning"), rows)


# --- advisors ----------------------------------------------------------------------------


def advisor_fields() -> str:
    from mondrian.advisors.model import Advisor

    schema = Advisor.model_json_schema()
    required = set(schema.get("required", []))
    rows = []
    for name, node in schema["properties"].items():
        kind = _type_of(node)
        if node.get("type") == "object":
            kind = "table of dimension = number"
        limits = _bounds(node)
        if "minItems" in node:
            limits = ", ".join(filter(None, [f"min items {node['minItems']}", limits]))
        if "pattern" in node:
            limits = f"pattern `{node['pattern']}`"
        needed = "yes" if name in required else f"no (default `{str(node['default']).lower()}`)"
        rows.append((f"`{name}`", kind, limits, needed, node.get("description", "")))
    return _table(("field", "type", "bounds", "required", "meaning"), rows)


def advisor_template() -> str:
    from mondrian.advisors.template import advisor_template as template

    return f"```toml\n{template('my_advisor')}```\n"


# --- storage -----------------------------------------------------------------------------


def storage_tables() -> str:
    from mondrian.storage.db import Database
    from mondrian.storage.migrations import MIGRATIONS

    with tempfile.TemporaryDirectory() as home:
        Database(Path(home) / "mondrian.db").open().close()  # opening applies the migrations
        conn = sqlite3.connect(Path(home) / "mondrian.db")
        text = _tables(conn)
        conn.close()
    migrations = ", ".join(f"`{m.name}`" for m in MIGRATIONS)
    return f"{text}\nMigrations, applied in this order: {migrations}.\n"


def _tables(conn: sqlite3.Connection) -> str:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    out = []
    for name in names:
        columns = conn.execute(f"PRAGMA table_info({name})").fetchall()
        rows = [
            (
                f"`{col[1]}`",
                col[2] or "",
                "yes" if col[5] else "",
                "yes" if col[3] else "",
                "" if col[4] is None else f"`{col[4]}`",
            )
            for col in columns
        ]
        out.append(
            f"### `{name}`\n\n" + _table(("column", "type", "key", "required", "default"), rows)
        )
    return "\n".join(out)


# --- the measured photo facts -------------------------------------------------------------


def facts_table() -> str:
    from mondrian.facts.spec import FACTS, VIEW_SIZES

    rows = [
        (f"`{f.name}`", f.kind, f"`{f.unit}`" if f.unit else "", VIEW_SIZES[f.view], f.method,
         f.meaning)
        for f in FACTS
    ]  # fmt: skip
    return _table(("fact", "kind", "unit", "measured on", "how", "meaning"), rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "critique-fields": critique_fields,
    "grade-table": grade_table,
    "mode-names": mode_names,
    "adapter-files": adapter_files,
    "adapter-meta": adapter_meta,
    "cli": cli_reference,
    "http": http_reference,
    "storage": storage_tables,
    "settings": settings_reference,
    "advisor-fields": advisor_fields,
    "advisor-template": advisor_template,
    "facts": facts_table,
}


def sections_in(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in SECTION.finditer(text)}


def render_doc(text: str) -> str:
    """`text` with every generated section rendered anew."""
    return SECTION.sub(lambda m: m[1] + "\n" + SECTIONS[m["name"]]() + "\n" + m[4], text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        fresh = render_doc(text)
        if fresh != text:
            stale.append(doc.name)
            if not check:
                doc.write_text(fresh, encoding="utf-8")
    verb = "stale" if check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "docs are up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main(sys.argv[1:]))
