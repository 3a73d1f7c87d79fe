"""Errors that cross layers. Each carries a stable `code` that the CLI and HTTP API show."""

from __future__ import annotations


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
