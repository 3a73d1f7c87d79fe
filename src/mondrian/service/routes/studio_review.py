"""The photographer's review of a critique, in the studio:

- `GET /studio/jobs/{id}/review`: the critique as a form (scores, comments,
  recommendations, description, strengths, improvements), with a CSRF token;
- `POST /studio/jobs/{id}/review`: stored through routes/reviews.py's `store_review`, as
  `POST /jobs/{id}/review` stores one: pending until the operator accepts it, accepted at
  once when the operator is signed in; then a redirect to the review's page;
- `GET /studio/jobs/{id}/reviews/{review_id}`: the original and the reviewed critique side
  by side, and what the review's status means for training (`dataset build
  --include-reviews` takes accepted reviews only, training/targets.py).

A review is addressed under its job: knowing the job's id is what opens its pages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from mondrian.errors import InvalidInput, MondrianError, NotFound, validation_problems
from mondrian.schema import DIMENSION_LABELS, DIMENSIONS, Critique
from mondrian.service.auth import ADMIN, operator_session
from mondrian.service.deps import ServiceState, State, load_advisor, load_job
from mondrian.service.errors import Conflict
from mondrian.service.routes.reviews import ReviewIn, store_review
from mondrian.service.routes.studio_forms import problem, read_form, render, text
from mondrian.storage import reviews as review_store
from mondrian.storage.jobs import Job
from mondrian.storage.reviews import Review
from mondrian.training.targets import check_target

router = APIRouter(include_in_schema=False)

ReviewId = Annotated[int, Path(ge=1, le=2**62)]
STATUS_MEANING = {
    "pending": "Stored. It becomes training data for this advisor once the operator accepts it.",
    "accepted": "Accepted: training data for this advisor "
    "(mondrian dataset build --include-reviews uses it).",
    "rejected": "Rejected by the operator: never training data.",
}


def reviewed_job(state: ServiceState, job_id: str) -> tuple[Job, Critique]:
    job = load_job(state.db, job_id)
    result = job.analysis()
    if job.status != "done" or result is None:
        raise Conflict(f"job {job.id} is {job.status}; review it once it is done", code="not_done")
    return job, result.critique


def form_values(critique: Critique) -> dict[str, str]:
    """The form's fields as the critique fills them."""
    values = {
        "image_description": critique.image_description,
        "strengths": "\n".join(critique.strengths),
        "improvements": "\n".join(critique.improvements),
    }
    for key, dim in critique.dimensions.items():
        values[f"{key}.score"] = str(dim.score)
        values[f"{key}.comment"] = dim.comment
        values[f"{key}.recommendation"] = dim.recommendation
    return values


def job_reviews(state: ServiceState, job_id: str) -> list[Review]:
    """The job's reviews, oldest first: what templates/studio/_critique_reviews.html lists."""
    with state.db.read() as conn:
        return review_store.list_reviews(conn, job_id=job_id)


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _score(value: str) -> Any:
    # A whole number stays a number for pydantic to bound; anything else it reports.
    stripped = value.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else stripped


def review_from_form(form: FormData) -> tuple[ReviewIn, dict[str, str]]:
    """The posted form as a ReviewIn (validated as the API validates one) and the values
    as sent, for showing the form again when they are refused."""
    values = {name: text(form, name) for name in form_values_names()}
    critique = {
        "image_description": values["image_description"],
        "dimensions": {
            key: {
                "score": _score(values[f"{key}.score"]),
                "comment": values[f"{key}.comment"],
                "recommendation": values[f"{key}.recommendation"],
            }
            for key in DIMENSIONS
        },
        "strengths": _lines(values["strengths"]),
        "improvements": _lines(values["improvements"]),
    }
    reviewer, note = text(form, "reviewer").strip(), text(form, "note").strip()
    values.update(reviewer=reviewer, note=note)
    try:
        review = ReviewIn.model_validate(
            {"critique": critique, "reviewer": reviewer or None, "note": note or None}
        )
    except ValidationError as exc:
        raise InvalidInput("the review was not stored: " + validation_problems(exc)) from exc
    reasons = check_target(review.critique)
    if reasons:
        # Stored, it could never be a training target: the model cannot write such text.
        raise InvalidInput("the review was not stored: " + "; ".join(reasons))
    return review, values


def form_values_names() -> list[str]:
    names = ["image_description", "strengths", "improvements"]
    for key in DIMENSIONS:
        names += [f"{key}.score", f"{key}.comment", f"{key}.recommendation"]
    return names


def _form_page(
    request: Request,
    state: ServiceState,
    job: Job,
    values: dict[str, str],
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    advisor = load_advisor(state.db, job.advisor_id)
    earlier = job_reviews(state, job.id)
    return render(
        request,
        state,
        "review.html",
        status_code=status_code,
        job=job,
        advisor=advisor,
        values=values,
        dimensions=[(key, DIMENSION_LABELS[key]) for key in DIMENSIONS],
        earlier=earlier,
        error=error,
    )


@router.get("/studio/jobs/{job_id}/review", response_class=HTMLResponse)
def review_form(job_id: str, request: Request, state: State) -> HTMLResponse:
    try:
        job, critique = reviewed_job(state, job_id)
    except MondrianError as exc:
        return problem(request, state, exc)
    return _form_page(request, state, job, {**form_values(critique), "reviewer": "", "note": ""})


@router.post("/studio/jobs/{job_id}/review", response_model=None)
async def post_review_form(
    job_id: str, request: Request, state: State
) -> HTMLResponse | RedirectResponse:
    try:
        job, _ = await run_in_threadpool(reviewed_job, state, job_id)
        form = await read_form(request)
    except MondrianError as exc:
        return problem(request, state, exc)
    values = {name: text(form, name) for name in form if isinstance(form.get(name), str)}
    try:
        review, values = review_from_form(form)
        if operator_session(request, state.settings):
            author, trusted = ADMIN, True
        else:
            host = request.client.host if request.client else "unknown"
            author, trusted = f"client:{host}", False
        stored = await run_in_threadpool(store_review, state, job.id, review, author, trusted)
    except MondrianError as exc:
        page = await run_in_threadpool(
            _form_page, request, state, job, values, exc.message, exc.http_status
        )
        return page
    return RedirectResponse(f"/studio/jobs/{job.id}/reviews/{stored.id}", status_code=303)


def comparison_rows(original: Critique, reviewed: Critique) -> list[dict[str, Any]]:
    """One row per dimension: both versions and whether the review changed it."""
    before, after = dict(original.dimensions.items()), dict(reviewed.dimensions.items())
    rows = []
    for key in DIMENSIONS:
        a, b = before[key], after[key]
        rows.append(
            {
                "key": key,
                "label": DIMENSION_LABELS[key],
                "before": a,
                "after": b,
                "changed": (a.score, a.comment, a.recommendation)
                != (b.score, b.comment, b.recommendation),
            }
        )
    return rows


def _load_review(state: ServiceState, job: Job, review_id: int) -> Review:
    with state.db.read() as conn:
        review = review_store.get_review(conn, review_id)
    if review is None or review.job_id != job.id:
        raise NotFound(f"job {job.id} has no review {review_id}", code="unknown_review")
    return review


@router.get("/studio/jobs/{job_id}/reviews/{review_id}", response_class=HTMLResponse)
def review_page(job_id: str, review_id: ReviewId, request: Request, state: State) -> HTMLResponse:
    try:
        job, original = reviewed_job(state, job_id)
        review = _load_review(state, job, review_id)
    except MondrianError as exc:
        return problem(request, state, exc)
    advisor = load_advisor(state.db, job.advisor_id)
    original = original.scored(advisor.weights) if original.overall_score is None else original
    return render(
        request,
        state,
        "review_view.html",
        job=job,
        advisor=advisor,
        review=review,
        original=original,
        rows=comparison_rows(original, review.critique),
        meaning=STATUS_MEANING[review.status],
    )
