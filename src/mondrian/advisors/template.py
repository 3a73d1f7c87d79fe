"""The advisor file a person starts from (`mondrian advisors new ID`): TOML, every field of
`Advisor` with its help as a comment, placeholders where only a person can write the text.

`load_advisor_file` refuses a file that still holds a placeholder and names each such field,
so a template is accepted as soon as its placeholders are filled and nothing else changes.
"""

from __future__ import annotations

import json
import typing

from mondrian.advisors.model import Advisor
from mondrian.schema import DIMENSIONS

PLACEHOLDER = "FILL IN"

# What each free-text field asks for; the model's descriptions say what it is.
_ASKS = {
    "name": "the photographer's name",
    "years": "birth-death years, e.g. 1902-1984",
    "bio": "a short, accurate biography",
    "sources": "a book, article or page the biography's facts come from",
    "philosophy": "what they believed about the craft",
    "techniques": "a signature technique",
    "voice_prompt": "how the critic speaks: You are ... looking at a photograph ...; "
    "answer only with the JSON critique",
}


def placeholder(ask: str) -> str:
    return f"{PLACEHOLDER}: {ask}"


def is_placeholder(value: object) -> bool:
    """Whether a field's value is (or, for a list, holds) an unfilled placeholder."""
    if isinstance(value, str):
        return value.startswith(PLACEHOLDER + ":")
    if isinstance(value, list):
        return any(is_placeholder(item) for item in value)
    return False


def _field_line(name: str, advisor_id: str) -> str:
    info = Advisor.model_fields[name]
    if name == "id":
        return f"id = {json.dumps(advisor_id)}"
    if info.annotation is bool:
        return f"{name} = {'true' if info.default else 'false'}"
    value = json.dumps(placeholder(_ASKS.get(name, name)))
    return (
        f"{name} = [{value}]" if typing.get_origin(info.annotation) is list else f"{name} = {value}"
    )


def advisor_template(advisor_id: str) -> str:
    """A commented TOML advisor file for `advisor_id`, every field of `Advisor` in order."""
    lines = [
        f"# Advisor {advisor_id!r}. Replace every {PLACEHOLDER!r} value, then:",
        f"#   mondrian advisors add {advisor_id}.toml",
        "# The format is described in docs/advisors.md.",
    ]
    tables = []
    for name, info in Advisor.model_fields.items():
        comment = [f"# {info.description}"]
        if typing.get_origin(info.annotation) is list:
            comment.append("# A list: add as many entries as you need.")
        if typing.get_origin(info.annotation) is dict:
            tables.append(name)
            continue
        lines += ["", *comment, _field_line(name, advisor_id)]
    for name in tables:  # TOML tables come after the plain keys
        lines += [
            "",
            f"# {Advisor.model_fields[name].description}",
            "# Every one of the 8 dimensions, each >= 0 and not all 0: how much each counts in",
            "# the overall score. 1.0 everywhere weighs them alike.",
            f"[{name}]",
            *(f"{dim} = 1.0" for dim in DIMENSIONS),
        ]
    return "\n".join(lines) + "\n"
