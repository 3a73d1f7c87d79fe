"""What the studio's form pages share (routes/studio_review.py, routes/studio_operator.py):
rendering with a CSRF token and the operator's sign-in state, reading a posted form, and
a refusal as a page a person reads (the API's JSON error shape is for programs).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse

from mondrian.errors import InvalidInput, MondrianError
from mondrian.service.auth import admin_enabled, operator_session
from mondrian.service.csrf import CSRF_FIELD, CsrfPair, check_csrf
from mondrian.service.deps import ServiceState
from mondrian.service.routes.studio import environment

OPS_CSS = "/studio/static/ops.css"
MAX_FIELDS = 64  # the review form has 3 per dimension and 6 more


def render(
    request: Request, state: ServiceState, name: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A studio page whose forms carry a CSRF token tied to this browser's cookie."""
    csrf = CsrfPair(request)
    html = (
        environment()
        .get_template(name)
        .render(
            csrf_field=CSRF_FIELD,
            csrf_token=csrf.token,
            ops_css=OPS_CSS,
            operator=operator_session(request, state.settings),
            admin_enabled=admin_enabled(state.settings),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
    return csrf.attach(response)


def problem(
    request: Request, state: ServiceState, exc: MondrianError, **context: Any
) -> HTMLResponse:
    """A refusal as a page: the message, its code, and a way back."""
    context.setdefault("title", "Not done")
    return render(
        request,
        state,
        "problem.html",
        status_code=exc.http_status,
        message=exc.message,
        code=exc.code,
        **context,
    )


async def read_form(request: Request) -> FormData:
    """The posted fields, CSRF-checked. The body is already bounded by middleware.BodyLimit."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidInput("send this form from the studio page", code="not_a_form")
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    check_csrf(request, form.get(CSRF_FIELD))
    return form


def text(form: FormData, name: str) -> str:
    """A text field's value ('' when absent); a file where text belongs is bad input."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"the field {name!r} must be text", code="invalid_field")
    return value
