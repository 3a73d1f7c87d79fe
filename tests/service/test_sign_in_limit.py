"""Failed operator sign-ins per client address (service/sign_in_limit.py): as a unit on a
clock the test sets, and through the studio's sign-in form."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from service_helpers import assert_error, tiny_settings

from mondrian.service.auth import SESSION_COOKIE
from mondrian.service.errors import RateLimited
from mondrian.service.sign_in_limit import SignInLimit

TOKEN = "operator-token-for-tests"
LOGIN = "/studio/operator/login"


def refused_for(limit: SignInLimit, address: str, now: float) -> int | None:
    """The Retry-After an attempt from `address` at `now` is refused with, or None."""
    try:
        limit.check(address, now=now)
    except RateLimited as exc:
        return exc.retry_after
    return None


def test_failures_in_the_window_refuse_until_the_oldest_leaves_it():
    limit = SignInLimit(attempts=3, window_s=300)
    for at in (0.0, 10.0, 20.0):
        assert refused_for(limit, "10.0.0.1", at) is None
        limit.failed("10.0.0.1", now=at)
    assert refused_for(limit, "10.0.0.1", 30.0) == 270  # the failure at 0 leaves at 300
    assert refused_for(limit, "10.0.0.2", 30.0) is None  # another address is not limited
    assert refused_for(limit, "10.0.0.1", 299.5) == 1
    # At 300 the first failure has left the window: one more attempt, which fails again.
    assert refused_for(limit, "10.0.0.1", 300.0) is None
    limit.failed("10.0.0.1", now=300.0)
    assert refused_for(limit, "10.0.0.1", 301.0) == 9  # now the failure at 10 is the oldest


def test_a_success_forgets_the_failures():
    limit = SignInLimit(attempts=2, window_s=60)
    limit.failed("a", now=0.0)
    limit.succeeded("a")
    limit.failed("a", now=1.0)
    assert refused_for(limit, "a", 2.0) is None  # one failure since the success, not two
    limit.failed("a", now=2.0)
    assert refused_for(limit, "a", 3.0) == 58


@pytest.mark.model
def test_the_sign_in_form_answers_429_after_the_failures(tiny_backend, tiny_model, tmp_path):
    from mondrian.service.app import create_app

    settings = tiny_settings(tmp_path / "home", tiny_model, admin_token=TOKEN, sign_in_attempts=3)
    app = create_app(settings, tiny_backend)

    def attempt(client: TestClient, token: str):
        page = client.get(LOGIN)
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert csrf, page.text
        data = {"csrf_token": csrf.group(1), "token": token}
        return client.post(LOGIN, data=data, follow_redirects=False)

    with TestClient(app, client=("192.0.2.7", 50000)) as client:
        for _ in range(2):
            assert attempt(client, "wrong").status_code == 403
        assert attempt(client, TOKEN).status_code == 303  # a success resets the count
        for _ in range(3):
            assert attempt(client, "wrong").status_code == 403
        for token in ("wrong", TOKEN):  # limited: even the right token is not looked at
            refused = attempt(client, token)
            body = assert_error(refused, 429, "rate_limited", "sign-ins")
            assert 1 <= int(refused.headers["retry-after"]) <= 300, body
            assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        # Another address is counted on its own (the app's state is shared).
        other = TestClient(app, client=("192.0.2.8", 50000))
        assert attempt(other, TOKEN).status_code == 303
