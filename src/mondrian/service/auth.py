"""Who is asking: the operator's bearer token, trusted reviewers' tokens, or a client.

Operator actions over HTTP (accepting reviews, and any route that changes adapters,
policy or advisors) depend on `Admin`: they need `MONDRIAN_ADMIN_TOKEN` as a bearer
token, and with none configured they are refused outright, so a service reachable by
others never has an open operator door by default. Tokens are compared in constant time.

The studio's operator pages (routes/studio_operator.py) sign in with the same token once,
through a form, and then carry a session cookie (`new_session`, `session_valid`): HttpOnly,
SameSite=Strict, `Path=/studio`, signed with a key derived from the token, so changing the
token ends every session; it expires after `SESSION_TTL_S`, and signing out revokes it.
The cookie authorizes the pages only; the API keeps the bearer header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
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
    if not admin_enabled(settings):
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


# --- the studio's operator session ---------------------------------------------------------

SESSION_COOKIE = "mondrian_operator"
SESSION_PATH = "/studio"
SESSION_TTL_S = 8 * 3600

# Nonces of sessions signed out before they expired, with their expiry. In memory: a
# restart forgets them, so a copied cookie of a signed-out session lives at most until its
# own expiry there; changing MONDRIAN_ADMIN_TOKEN ends every session at once.
_revoked: dict[str, float] = {}
_revoked_lock = threading.Lock()


def admin_enabled(settings: Settings) -> bool:
    return settings.admin_token is not None and bool(settings.admin_token.get_secret_value())


def _session_key(settings: Settings) -> bytes:
    assert settings.admin_token is not None
    secret = settings.admin_token.get_secret_value().encode()
    return hmac.new(secret, b"mondrian studio operator session v1", hashlib.sha256).digest()


def _sign(settings: Settings, payload: str) -> str:
    return hmac.new(_session_key(settings), payload.encode(), hashlib.sha256).hexdigest()


def new_session(settings: Settings, now: float | None = None) -> str:
    """A session cookie's value: `expiry.nonce.signature`."""
    if not admin_enabled(settings):
        raise Forbidden("operator sign-in is disabled: MONDRIAN_ADMIN_TOKEN is not set")
    expires = int((time.time() if now is None else now) + SESSION_TTL_S)
    payload = f"{expires}.{secrets.token_hex(16)}"
    return f"{payload}.{_sign(settings, payload)}"


def _parts(value: str) -> tuple[int, str, str] | None:
    expires, _, rest = value.partition(".")
    nonce, _, signature = rest.partition(".")
    if not (expires.isdigit() and len(nonce) == 32 and len(signature) == 64):
        return None
    return int(expires), nonce, signature


def session_valid(settings: Settings, value: str | None, now: float | None = None) -> bool:
    """Whether `value` is a live session cookie signed with the current token."""
    if not value or not admin_enabled(settings):
        return False
    parts = _parts(value)
    if parts is None:
        return False
    expires, nonce, signature = parts
    expected = _sign(settings, f"{expires}.{nonce}")
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return False
    with _revoked_lock:
        revoked = nonce in _revoked
    return not revoked and (time.time() if now is None else now) < expires


def revoke_session(value: str | None) -> None:
    """Sign a session out: its cookie is refused from now on, even if replayed."""
    parts = _parts(value or "")
    if parts is None:
        return
    expires, nonce, _ = parts
    now = time.time()
    with _revoked_lock:
        for old in [n for n, until in _revoked.items() if until <= now]:
            del _revoked[old]  # expired anyway: no need to remember them
        _revoked[nonce] = expires


def operator_session(request: Request, settings: Settings) -> bool:
    """Whether the request carries a live operator session cookie."""
    return session_valid(settings, request.cookies.get(SESSION_COOKIE))


def check_login(settings: Settings, token: str) -> None:
    """The sign-in form's check, in constant time; raises with the reason it failed."""
    if not admin_enabled(settings):
        raise Forbidden(
            "operator actions are disabled: set MONDRIAN_ADMIN_TOKEN to enable them",
            code="admin_disabled",
        )
    if not is_admin_token(settings, token):
        raise Forbidden("that is not the operator token", code="bad_token")
