"""The operator's session cookie (service/auth.py) and the forms' CSRF tokens
(service/csrf.py), as functions: no app, no model."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from mondrian.config import Settings
from mondrian.service.auth import (
    SESSION_TTL_S,
    Forbidden,
    check_login,
    new_session,
    revoke_session,
    session_valid,
)
from mondrian.service.csrf import CSRF_COOKIE, CsrfPair, check_csrf, form_token


def settings(tmp_path, token: str | None = "s3cret-token") -> Settings:
    return Settings(home=tmp_path, admin_token=None if token is None else SecretStr(token))


def request_with(cookies: dict[str, str]) -> Request:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/studio/operator",
        "headers": [(b"cookie", header)] if cookies else [],
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "query_string": b"",
    }
    return Request(scope)


def test_a_session_is_valid_until_it_expires(tmp_path):
    s = settings(tmp_path)
    now = time.time()
    cookie = new_session(s, now=now)
    assert session_valid(s, cookie, now=now)
    assert session_valid(s, cookie, now=now + SESSION_TTL_S - 1)
    assert not session_valid(s, cookie, now=now + SESSION_TTL_S + 1)


def test_a_tampered_or_foreign_cookie_is_refused(tmp_path):
    s = settings(tmp_path)
    cookie = new_session(s)
    expires, nonce, signature = cookie.split(".")
    # A later expiry under the old signature, a flipped signature, garbage, nothing.
    assert not session_valid(s, f"{int(expires) + 10**6}.{nonce}.{signature}")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert not session_valid(s, f"{expires}.{nonce}.{flipped}")
    for junk in ("", "x", "1.2.3", cookie + "x", None):
        assert not session_valid(s, junk)
    # Changing the token ends every session signed with the old one.
    assert not session_valid(settings(tmp_path, "another-token"), cookie)
    # Without a token nothing is a session.
    assert not session_valid(settings(tmp_path, None), cookie)


def test_signing_out_revokes_the_cookie(tmp_path):
    s = settings(tmp_path)
    cookie, other = new_session(s), new_session(s)
    revoke_session(cookie)
    assert not session_valid(s, cookie)
    assert session_valid(s, other)
    revoke_session("not a cookie")  # ignored, no error


def test_login_says_why_it_refuses(tmp_path):
    with pytest.raises(Forbidden) as disabled:
        check_login(settings(tmp_path, None), "anything")
    assert disabled.value.code == "admin_disabled"
    assert "MONDRIAN_ADMIN_TOKEN" in disabled.value.message
    with pytest.raises(Forbidden) as wrong:
        check_login(settings(tmp_path), "s3cret-tokeN")
    assert wrong.value.code == "bad_token"
    check_login(settings(tmp_path), "s3cret-token")  # the right one passes
    with pytest.raises(Forbidden):
        new_session(settings(tmp_path, None))


def test_csrf_token_is_tied_to_the_cookie():
    fresh = CsrfPair(request_with({}))
    assert fresh.new and len(fresh.cookie) == 32 and fresh.token == form_token(fresh.cookie)
    again = CsrfPair(request_with({CSRF_COOKIE: fresh.cookie}))
    assert not again.new and again.token == fresh.token

    check_csrf(request_with({CSRF_COOKIE: fresh.cookie}), fresh.token)
    other = CsrfPair(request_with({}))
    for cookies, token in (
        ({}, fresh.token),  # no cookie
        ({CSRF_COOKIE: fresh.cookie}, None),  # no field
        ({CSRF_COOKIE: fresh.cookie}, other.token),  # another browser's token
        ({CSRF_COOKIE: fresh.cookie}, fresh.cookie),  # the cookie itself is not the token
        ({CSRF_COOKIE: "zz"}, form_token("zz")),  # a cookie we never set
    ):
        with pytest.raises(Forbidden) as refused:
            check_csrf(request_with(cookies), token)
        assert refused.value.code == "csrf_failed"
