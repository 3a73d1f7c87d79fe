"""Every error leaves the service as `{"error": {"code", "message"}}`, never a traceback.

- `MondrianError`: its own code and HTTP status (plus `Retry-After` for a full queue);
- request validation (a missing or malformed field): 422 naming the field;
- HTTP errors from routing (unknown path, wrong method, body too large): their status;
- anything else is a bug: 500 with a generic message; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mondrian.errors import MondrianError, describe_validation, field_name

log = logging.getLogger(__name__)


class Conflict(MondrianError):
    """The resource exists but is not in a state that allows this (e.g. a job not done)."""

    code = "conflict"
    http_status = 409


class RateLimited(MondrianError):
    """Too many requests of one kind from one client; `Retry-After` says when to retry."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AnalysisTimeout(MondrianError):
    code = "timeout"
    http_status = 504


# Codes for the HTTP errors that routing and body parsing raise on their own.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(exc: MondrianError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON response for a MondrianError, with `Retry-After` where it has one."""
    all_headers = dict(headers or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        all_headers["Retry-After"] = str(int(retry_after))
    return JSONResponse(
        error_body(exc.code, exc.message), status_code=exc.http_status, headers=all_headers
    )


# Where FastAPI found the value: not part of the field's name.
_SOURCES = ("body", "query", "path", "header", "cookie")


def _field(loc: Sequence[Any]) -> str:
    return field_name(loc, root="body", drop=_SOURCES)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str, list[str]]:
    """(code, message, fields) for pydantic/FastAPI validation errors."""
    fields = list(dict.fromkeys(_field(e.get("loc", ())) for e in errors))
    missing = [e for e in errors if e.get("type") == "missing"]
    if missing and len(missing) == len(errors):
        names = ", ".join(repr(_field(e["loc"])) for e in missing)
        return "missing_field", f"missing required field(s): {names}", fields
    problems = describe_validation(errors, root="body", drop=_SOURCES, limit=5)
    return "invalid_field", "invalid request: " + problems, fields


async def _mondrian_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MondrianError)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    code, message, fields = validation_message(exc.errors())
    return JSONResponse(error_body(code, message, fields=fields), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 413:
        code, message = "file_too_large", f"the request body is too large: {message}"
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "internal error; the service log has the details"),
        status_code=500,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(MondrianError, _mondrian_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
