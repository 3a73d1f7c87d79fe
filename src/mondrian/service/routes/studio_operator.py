"""The operator's pages in the studio, behind `MONDRIAN_ADMIN_TOKEN`:

- `GET|POST /studio/operator/login`, `POST /studio/operator/logout`: the token, posted once
  through a form and checked in constant time, becomes a session cookie (service/auth.py);
- `GET /studio/operator`: adapters per advisor, every version and the active one;
  `POST /studio/operator/adapters/activate` (field `ref`) and `.../rollback` (`advisor`);
- `GET /studio/operator/ab`: the model policy and the A/B report with its charts;
- `GET /studio/operator/portfolios`: each advisor's portfolio index status;
- `GET /studio/operator/reviews`: reviews waiting for a decision;
  `POST /studio/operator/reviews/{id}/accept|reject`.

Every post carries a CSRF token (service/csrf.py). Without a token configured every page
says operator actions are disabled and every action is refused (403) with that message;
without a session the pages send the browser to the sign-in form and actions are refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData
from starlette.responses import Response

from mondrian.errors import MondrianError
from mondrian.service.abreport import compare_variants
from mondrian.service.auth import (
    ADMIN,
    SESSION_COOKIE,
    SESSION_PATH,
    SESSION_TTL_S,
    Forbidden,
    admin_enabled,
    check_login,
    new_session,
    operator_session,
    revoke_session,
)
from mondrian.service.deps import ServiceState, State, check_advisor_id
from mondrian.service.errors import RateLimited, error_response
from mondrian.service.operator_views import ab_charts, adapters_by_advisor, portfolio_status
from mondrian.service.routes.ab import DEFAULT_WINDOW
from mondrian.service.routes.studio_forms import problem, read_form, render, text
from mondrian.storage import jobs as job_store
from mondrian.storage import reviews as review_store
from mondrian.training import registry

router = APIRouter(include_in_schema=False)

BASE = "/studio/operator"
LOGIN = f"{BASE}/login"
ReviewId = Annotated[int, Path(ge=1, le=2**62)]


def disabled() -> Forbidden:
    return Forbidden(
        "operator actions are disabled: set MONDRIAN_ADMIN_TOKEN and restart `mondrian serve` "
        "to enable them",
        code="admin_disabled",
    )


def refusal(request: Request, state: ServiceState) -> MondrianError | None:
    """Why this request may not use the operator pages, or None."""
    if not admin_enabled(state.settings):
        return disabled()
    if not operator_session(request, state.settings):
        return Forbidden(
            "this needs the operator: sign in with the token first", code="admin_required"
        )
    return None


def gate(request: Request, state: ServiceState) -> Response | None:
    """A page's gate: the disabled notice, or the sign-in form, or None to go on."""
    why = refusal(request, state)
    if why is None:
        return None
    if why.code == "admin_disabled":
        return problem(request, state, why, title="Operator pages")
    return RedirectResponse(LOGIN, status_code=303)


async def action_form(request: Request, state: ServiceState) -> FormData:
    """An action's form, once the CSRF token and the session are checked (a disabled
    operator is said first: no form can help then)."""
    if not admin_enabled(state.settings):
        raise disabled()
    form = await read_form(request)
    why = refusal(request, state)
    if why is not None:
        raise why
    return form


# --- signing in and out ------------------------------------------------------------------


@router.get(LOGIN, response_class=HTMLResponse)
def login_form(request: Request, state: State) -> HTMLResponse:
    if not admin_enabled(state.settings):
        return problem(request, state, disabled(), title="Operator sign-in")
    return render(request, state, "operator_login.html", error=None)


@router.post(LOGIN, response_model=None)
async def login(request: Request, state: State) -> Response:
    address = request.client.host if request.client else "unknown"
    try:
        if not admin_enabled(state.settings):
            raise disabled()
        # Before the form is read or the token compared: a limited address learns nothing,
        # not even whether its next guess was right.
        state.sign_ins.check(address)
        form = await read_form(request)
        token = text(form, "token").strip()
        try:
            check_login(state.settings, token)
        except MondrianError:
            state.sign_ins.failed(address)
            raise
    except RateLimited as exc:
        return error_response(exc)
    except MondrianError as exc:
        if exc.code in ("bad_token", "csrf_failed"):
            return render(request, state, "operator_login.html", status_code=403, error=exc.message)
        return problem(request, state, exc, title="Operator sign-in")
    state.sign_ins.succeeded(address)
    response = RedirectResponse(BASE, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        new_session(state.settings),
        max_age=SESSION_TTL_S,
        path=SESSION_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post(f"{BASE}/logout", response_model=None)
async def logout(request: Request, state: State) -> Response:
    try:
        await read_form(request)
    except MondrianError as exc:
        return problem(request, state, exc)
    revoke_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(LOGIN if admin_enabled(state.settings) else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=SESSION_PATH, httponly=True, samesite="strict")
    return response


# --- adapters ----------------------------------------------------------------------------


def _adapters_page(
    request: Request,
    state: ServiceState,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    with state.db.read() as conn:
        advisors = adapters_by_advisor(conn)
    return render(
        request,
        state,
        "operator_adapters.html",
        status_code=status_code,
        advisors=advisors,
        notice=notice,
        error=error,
    )


@router.get(BASE, response_model=None)
def adapters_page(request: Request, state: State) -> Response:
    return gate(request, state) or _adapters_page(request, state)


async def _adapter_action(request: Request, state: ServiceState, action: str) -> Response:
    try:
        form = await action_form(request, state)
    except MondrianError as exc:
        return problem(request, state, exc, title="Operator action refused")
    try:
        if action == "activate":
            adapter = await run_in_threadpool(
                registry.activate_version, state.db, text(form, "ref")
            )
            notice = f"{adapter.ref} is now active"
        else:
            advisor_id = check_advisor_id(text(form, "advisor"))
            adapter = await run_in_threadpool(registry.rollback_advisor, state.db, advisor_id)
            notice = f"rolled back: {adapter.ref} is now active"
    except MondrianError as exc:
        return await run_in_threadpool(
            _adapters_page, request, state, None, exc.message, exc.http_status
        )
    return await run_in_threadpool(_adapters_page, request, state, notice)


@router.post(f"{BASE}/adapters/activate", response_model=None)
async def activate(request: Request, state: State) -> Response:
    return await _adapter_action(request, state, "activate")


@router.post(f"{BASE}/adapters/rollback", response_model=None)
async def rollback(request: Request, state: State) -> Response:
    return await _adapter_action(request, state, "rollback")


# --- the model policy and the A/B report -------------------------------------------------


@router.get(f"{BASE}/ab", response_model=None)
def ab_page(request: Request, state: State) -> Response:
    gated = gate(request, state)
    if gated is not None:
        return gated
    with state.db.read() as conn:
        report = compare_variants(job_store.list_jobs(conn, limit=DEFAULT_WINDOW))
    return render(
        request,
        state,
        "operator_ab.html",
        policy=state.policy.describe(),
        report=report,
        charts=ab_charts(report),
        window=DEFAULT_WINDOW,
    )


# --- portfolios --------------------------------------------------------------------------


@router.get(f"{BASE}/portfolios", response_model=None)
def portfolios_page(request: Request, state: State) -> Response:
    gated = gate(request, state)
    if gated is not None:
        return gated
    with state.db.read() as conn:
        rows = portfolio_status(conn)
    return render(request, state, "operator_portfolios.html", portfolios=rows)


# --- reviews -----------------------------------------------------------------------------


def _reviews_page(request: Request, state: ServiceState, notice: str | None = None) -> Response:
    with state.db.read() as conn:
        pending = review_store.list_reviews(conn, status="pending")
        decided = review_store.list_reviews(conn, status="accepted")[-10:]
    return render(
        request, state, "operator_reviews.html", pending=pending, accepted=decided, notice=notice
    )


@router.get(f"{BASE}/reviews", response_model=None)
def reviews_page(request: Request, state: State) -> Response:
    return gate(request, state) or _reviews_page(request, state)


@router.post(f"{BASE}/reviews/{{review_id}}/{{decision}}", response_model=None)
async def decide(
    review_id: ReviewId, decision: Literal["accept", "reject"], request: Request, state: State
) -> Response:
    try:
        await action_form(request, state)
        status = "accepted" if decision == "accept" else "rejected"
        review = await run_in_threadpool(
            state.db.write, review_store.decide_review, review_id, status, ADMIN
        )
    except MondrianError as exc:
        return problem(request, state, exc, title="Operator action refused")
    notice = f"review {review.id} of {review.advisor_id} {review.status}"
    return await run_in_threadpool(_reviews_page, request, state, notice)
