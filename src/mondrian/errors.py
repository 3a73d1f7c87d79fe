"""Errors that cross layers. Each carries a stable `code` that the CLI and HTTP API show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError


class MondrianError(Exception):
    """A problem the user can act on; never a bug. Shown without a traceback."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(MondrianError):
    code = "not_found"
    http_status = 404


class InvalidInput(MondrianError):
    code = "invalid_input"
    http_status = 422


class PayloadTooLarge(InvalidInput):
    code = "too_large"
    http_status = 413


class Unavailable(MondrianError):
    """Something needed is missing (a model, an adapter, an optional dependency)."""

    code = "unavailable"
    http_status = 503


# --- pydantic validation errors, as users read them ---------------------------------------

ErrorList = Sequence[Mapping[str, Any]]


def field_name(loc: Sequence[object], *, root: str | None = None, drop: Sequence[str] = ()) -> str:
    """`a.b.0` for a pydantic error location; its first part dropped when in `drop` (FastAPI's
    `body`, `query`, ...); `root` (or '') when nothing is left."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in drop:
        parts = parts[1:]
    return ".".join(parts) or (root or "")


def validation_pairs(
    errors: ValidationError | ErrorList, *, root: str | None = None, drop: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(field, message) per error; the field is `root` (or '') when the error has no
    location."""
    found = errors.errors(include_url=False) if isinstance(errors, ValidationError) else errors
    pairs = []
    for error in found:
        # A validator's ValueError reads "Value error, <its text>": the text is the message.
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        pairs.append((field_name(error.get("loc", ()), root=root, drop=drop), msg))
    return pairs


def validation_problems(
    errors: ValidationError | ErrorList,
    *,
    root: str | None = None,
    drop: Sequence[str] = (),
    field: str = "{}",
) -> list[str]:
    """One `field: message` line per error. `root` names the whole object when an error has
    no location (None: the message alone); `field` formats the name (`"field '{}'"`)."""
    pairs = validation_pairs(errors, root=root, drop=drop)
    return [f"{field.format(name)}: {msg}" if name else msg for name, msg in pairs]


def describe_validation(
    errors: ValidationError | ErrorList,
    *,
    root: str | None = None,
    drop: Sequence[str] = (),
    field: str = "{}",
    limit: int | None = None,
) -> str:
    """The problems on one line, `; `-separated, the first `limit` of them and a count of
    the rest: the one way config files, training configs, advisor files, profile rows and
    HTTP bodies report what is invalid."""
    lines = validation_problems(errors, root=root, drop=drop, field=field)
    shown = lines if limit is None else lines[:limit]
    more = len(lines) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


# --- names chosen from a fixed set (modes.py) ---------------------------------------------

Choice = TypeVar("Choice", bound=StrEnum)


def parse_choice(
    kind: type[Choice], value: object, what: str, *, code: str | None = None
) -> Choice:
    """`value` as a member of `kind`, or InvalidInput("unknown <what> '<value>'; choose one
    of: a, b, c") with `code` (InvalidInput's own by default): how every edge refuses a mode
    or a policy it does not know."""
    try:
        return kind(value)
    except ValueError:
        shown = str(value)[:40]  # the value comes from a user: bounded in the message
        raise InvalidInput(
            f"unknown {what} {shown!r}; choose one of: {', '.join(kind)}", code=code
        ) from None
