"""CSRF tokens for the studio's forms (review, operator sign-in and actions): signed
double submit.

A page with a form sets a random `mondrian_csrf` cookie (HttpOnly, SameSite=Strict) when
the browser has none, and puts `HMAC(key, cookie)` in the form's hidden `csrf_token`
field; a post is taken only when the field matches the cookie it arrived with (constant
time). Another site can neither read the cookie nor compute the field, and SameSite=Strict
keeps the cookie off its requests anyway; guards.RequestGuard's Origin check comes first.

The key is drawn once per process: a restart makes open forms stale (the post is refused
with a message to reload), which costs a reload and needs no secret in the settings.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from fastapi import Request
from starlette.responses import Response

from mondrian.service.auth import SESSION_PATH, Forbidden

CSRF_COOKIE = "mondrian_csrf"
CSRF_FIELD = "csrf_token"
_KEY = secrets.token_bytes(32)
_COOKIE_VALUE = re.compile(r"^[0-9a-f]{32}$")


def form_token(cookie: str) -> str:
    return hmac.new(_KEY, cookie.encode(), hashlib.sha256).hexdigest()


class CsrfPair:
    """The cookie a page's form is tied to (new if the browser had none) and its token."""

    def __init__(self, request: Request) -> None:
        given = request.cookies.get(CSRF_COOKIE, "")
        self.new = not _COOKIE_VALUE.fullmatch(given)
        self.cookie = secrets.token_hex(16) if self.new else given
        self.token = form_token(self.cookie)
        self.secure = request.url.scheme == "https"

    def attach(self, response: Response) -> Response:
        if self.new:
            response.set_cookie(
                CSRF_COOKIE,
                self.cookie,
                path=SESSION_PATH,
                httponly=True,
                samesite="strict",
                secure=self.secure,
            )
        return response


def check_csrf(request: Request, submitted: object) -> None:
    """Refuse a form post whose token does not match its cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    ok = (
        bool(_COOKIE_VALUE.fullmatch(cookie))
        and isinstance(submitted, str)
        and hmac.compare_digest(submitted.encode(), form_token(cookie).encode())
    )
    if not ok:
        raise Forbidden(
            "this form has expired or did not come from this studio: reload the page and "
            "send it again",
            code="csrf_failed",
        )
