"""Who is asking: the operator's bearer token, trusted reviewers' tokens, or a client.

Operator actions over HTTP (accepting reviews, and any route that changes adapters,
policy or advisors) depend on `Admin`: they need `MONDRIAN_ADMIN_TOKEN` as a bearer
token, and with none configured they are refused outright, so a service reachable by
others never has an open operator door by default. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from mondrian.config import Settings
from mondrian.errors import MondrianError
from mondrian.service.deps import State

ADMIN = "admin"


class Forbidden(MondrianError):
    code = "forbidden"
    http_status = 403


class Unauthorized(MondrianError):
    code = "unauthorized"
    http_status = 401


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None without one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", code="bad_token")
    return token.strip()


def _same(given: str, secret: str) -> bool:
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


def is_admin_token(settings: Settings, token: str) -> bool:
    secret = settings.admin_token.get_secret_value() if settings.admin_token else ""
    return _same(token, secret)


def require_admin(request: Request, state: State) -> str:
    settings = state.settings
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise Forbidden(
            "operator actions over HTTP are disabled: set MONDRIAN_ADMIN_TOKEN to enable them",
            code="admin_disabled",
        )
    token = bearer_token(request)
    if token is None or not is_admin_token(settings, token):
        raise Forbidden("this needs the operator's bearer token", code="admin_required")
    return ADMIN


Admin = Annotated[str, Depends(require_admin)]
"""A handler's parameter `_admin: Admin` makes it an operator action."""


def review_author(request: Request, settings: Settings) -> tuple[str, bool]:
    """(author, trusted) of a review: the operator, a trusted reviewer's token id, or the
    client's address (untrusted). A bearer token that is neither is refused."""
    token = bearer_token(request)
    if token is None:
        host = request.client.host if request.client else "unknown"
        return f"client:{host}", False
    if is_admin_token(settings, token):
        return ADMIN, True
    for token_id, secret in settings.review_tokens.items():
        if _same(token, secret.get_secret_value()):
            return f"token:{token_id}", True
    raise Unauthorized("unknown bearer token", code="bad_token")
