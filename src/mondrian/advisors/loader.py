"""Reading advisor files (JSON or TOML) and the advisors shipped with the package.

Every problem with a file becomes one `InvalidInput` with a one-line message that names
the file and the field, so the CLI and the HTTP API can show it as it is.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from functools import lru_cache
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mondrian.advisors.model import Advisor
from mondrian.advisors.template import is_placeholder
from mondrian.errors import InvalidInput, NotFound, describe_validation

SUPPORTED_SUFFIXES: tuple[str, ...] = (".json", ".toml")

# An advisor is a few kilobytes of text; refuse anything far larger before parsing it.
MAX_ADVISOR_BYTES = 1024 * 1024


def load_advisor_file(path: Path) -> Advisor:
    """Read and validate one advisor from a .json or .toml file."""
    path = Path(path)
    label = f"advisor file {_one_line(str(path))}"
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = suffix or "(none)"
        raise InvalidInput(f"{label}: unsupported extension '{shown}' (use .json or .toml)")
    try:
        size = path.stat().st_size
        if size > MAX_ADVISOR_BYTES:
            raise InvalidInput(f"{label}: {size} bytes is larger than {MAX_ADVISOR_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InvalidInput(f"{label}: cannot read: {_one_line(exc.strerror or str(exc))}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{label}: not UTF-8 text (byte {exc.start})") from exc

    data = _parse(text, suffix, label)
    if not isinstance(data, dict):
        raise InvalidInput(f"{label}: the top level must be an object, not {type(data).__name__}")
    # A template from `mondrian advisors new` still holding what only a person can write.
    unfilled = [f"field '{k}'" for k, v in data.items() if is_placeholder(v)]
    if unfilled:
        raise InvalidInput(f"{label}: fill in the placeholder of {', '.join(unfilled)}")
    try:
        advisor = Advisor.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{label}: {_describe(exc)}") from exc
    # The model accepts inf/nan (pydantic's default); they would poison every overall score.
    bad = [k for k, w in advisor.weights.items() if not math.isfinite(w)]
    if bad:
        raise InvalidInput(f"{label}: field 'weights': not a finite number: {bad}")
    return advisor


def shipped_advisors() -> list[Advisor]:
    """Every advisor in the package's data directory, sorted by id."""
    # Copies, so that a caller changing an advisor cannot change everyone else's.
    return [advisor.model_copy(deep=True) for advisor in _load_shipped()]


def get_shipped(advisor_id: str) -> Advisor:
    """One shipped advisor by id; `NotFound` lists the ids that exist."""
    for advisor in _load_shipped():
        if advisor.id == advisor_id:
            return advisor.model_copy(deep=True)
    known = ", ".join(a.id for a in _load_shipped())
    shown = _one_line(str(advisor_id))[:80]
    raise NotFound(f"unknown advisor {shown!r}; known advisors: {known}")


@lru_cache(maxsize=1)
def _load_shipped() -> tuple[Advisor, ...]:
    data_dir = files("mondrian.advisors") / "data"
    advisors: list[Advisor] = []
    for entry in sorted(data_dir.iterdir(), key=lambda e: e.name):
        if not entry.is_file() or not entry.name.lower().endswith(SUPPORTED_SUFFIXES):
            continue
        # as_file gives a real path even when the package is imported from a zip.
        with as_file(entry) as real_path:
            advisor = load_advisor_file(Path(real_path))
        stem = entry.name.rsplit(".", 1)[0]
        # The file name is how people find an advisor's data; it must not disagree.
        if advisor.id != stem:
            raise InvalidInput(
                f"advisor file {entry.name}: field 'id': {advisor.id!r} does not match "
                f"the file name"
            )
        advisors.append(advisor)
    ids = [a.id for a in advisors]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidInput(f"shipped advisors: duplicate ids {duplicates}")
    return tuple(sorted(advisors, key=lambda a: a.id))


def _parse(text: str, suffix: str, label: str) -> Any:
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{label}: invalid TOML: {_one_line(str(exc))}") from exc
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates(label), parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{label}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except ValueError as exc:  # from the two hooks above
        raise InvalidInput(f"{label}: invalid JSON: {exc}") from exc


def _reject_duplicates(label: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    # json.loads keeps the last of two equal keys silently; in a hand-edited file that
    # is almost always a mistake worth naming.
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"duplicate key {_one_line(key)!r}")
            result[key] = value
        return result

    return hook


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _describe(exc: ValidationError) -> str:
    # Every problem, so that one edit fixes the file (not one round trip per field).
    return _one_line(describe_validation(exc, field="field '{}'"))


def _one_line(text: str) -> str:
    # Paths and keys come from users; no newline or terminal escape gets into a message.
    return "".join(c if c.isprintable() else " " for c in text)
