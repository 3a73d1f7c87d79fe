"""Reviews: `POST /jobs/{id}/review` by anyone, decided on by the operator under `/admin`.

A review becomes training data (`dataset build --include-reviews`) only once trusted:
posted with a trusted token (`MONDRIAN_REVIEW_TOKENS`, or the admin token), or accepted
by the operator (`POST /admin/reviews/{id}/accept`, or `mondrian reviews accept`). Each
client may post `reviews_per_hour` reviews; the same critique of a job is refused.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from mondrian.schema import Critique
from mondrian.service.auth import ADMIN, Admin, review_author
from mondrian.service.deps import ServiceState, State, check_advisor_id, load_advisor, load_job
from mondrian.service.errors import Conflict, RateLimited
from mondrian.storage import reviews
from mondrian.storage.reviews import Review

router = APIRouter(tags=["reviews"])

_NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # newlines and tabs are fine in a note
WINDOW = timedelta(hours=1)

Reviewer = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=_NO_CONTROL)
]
Note = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=_NO_CONTROL),
]
ReviewId = Annotated[int, Path(ge=1, le=2**62)]


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return False


class ReviewIn(BaseModel):
    """A person's corrected critique of a job; once trusted, it becomes training data."""

    model_config = ConfigDict(extra="forbid")

    critique: Critique = Field(description="The corrected critique (overall score is recomputed).")
    reviewer: Reviewer | None = None
    note: Note | None = None

    @field_validator("critique", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # A critique has no boolean field, and pydantic would read `true` as the score 1.
        if _has_bool(value):
            raise ValueError("a critique holds no booleans (a score is a number from 0 to 10)")
        return value


class ReviewOut(BaseModel):
    id: int
    job_id: str
    advisor_id: str
    image_hash: str
    reviewer: str | None
    note: str | None
    created_at: str
    author: str | None = Field(description="Who posted it: 'client:ADDR', 'token:ID' or 'admin'.")
    status: Literal["pending", "accepted", "rejected"] = Field(
        description="Only accepted reviews become training data."
    )
    decided_by: str | None
    decided_at: str | None
    critique: Critique


def review_out(stored: Review) -> ReviewOut:
    return ReviewOut(
        id=stored.id,
        job_id=stored.job_id,
        advisor_id=stored.advisor_id,
        image_hash=stored.image_hash,
        reviewer=stored.reviewer,
        note=stored.note,
        created_at=stored.created_at,
        author=stored.author,
        status=stored.status,
        decided_by=stored.decided_by,
        decided_at=stored.decided_at,
        critique=stored.critique,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _add_within_limit(
    conn: sqlite3.Connection,
    job_id: str,
    critique: Critique,
    reviewer: str | None,
    note: str | None,
    author: str,
    trusted: bool,
    per_hour: int,
) -> Review:
    """The rate check and the insert in one write transaction: a burst cannot slip past."""
    now = datetime.now(UTC)
    since = _iso(now - WINDOW)
    count, oldest = reviews.recent_by(conn, author, since)
    if author != ADMIN and count >= per_hour and oldest is not None:
        frees = datetime.fromisoformat(oldest.replace("Z", "+00:00")) + WINDOW
        wait = max(1, math.ceil((frees - now).total_seconds()))
        raise RateLimited(
            f"at most {per_hour} reviews an hour from one client; retry in {wait} s",
            retry_after=wait,
        )
    return reviews.add_review(
        conn,
        job_id,
        critique,
        reviewer,
        note,
        author=author,
        accepted_by=author if trusted else None,
    )


def store_review(
    state: ServiceState, job_id: str, review: ReviewIn, author: str, trusted: bool
) -> Review:
    """Store a review of a finished job by `author` (the API's and the studio's form's
    path): the overall score recomputed, the rate limit and the insert in one write."""
    job = load_job(state.db, job_id)
    if not job.finished:
        raise Conflict(
            f"job {job.id} is {job.status}; review it once it has finished", code="not_finished"
        )
    advisor = load_advisor(state.db, job.advisor_id)
    # The overall score is Mondrian's to compute, from the corrected dimension scores.
    critique = review.critique.scored(advisor.weights)
    return state.db.write(
        _add_within_limit,
        job.id,
        critique,
        review.reviewer,
        review.note,
        author,
        trusted,
        state.settings.reviews_per_hour,
    )


@router.post(
    "/jobs/{job_id}/review",
    status_code=201,
    response_model=ReviewOut,
    summary="Store a corrected critique of a finished job (pending until trusted)",
    responses={
        404: {"description": "Unknown job"},
        409: {"description": "Job not finished, or the same review exists"},
        422: {"description": "Not a valid critique"},
        429: {"description": "Too many reviews from this client"},
    },
)
def post_review(job_id: str, review: ReviewIn, request: Request, state: State) -> ReviewOut:
    author, trusted = review_author(request, state.settings)
    return review_out(store_review(state, job_id, review, author, trusted))


@router.get(
    "/admin/reviews",
    response_model=list[ReviewOut],
    summary="Reviews, oldest first (operator)",
    responses={403: {"description": "No or wrong admin token"}},
)
def list_reviews(
    state: State,
    _admin: Admin,
    status: Annotated[Literal["pending", "accepted", "rejected"] | None, Query()] = None,
    advisor: Annotated[str | None, Query()] = None,
) -> list[ReviewOut]:
    if advisor is not None:
        check_advisor_id(advisor)
    with state.db.read() as conn:
        found = reviews.list_reviews(conn, advisor_id=advisor, status=status)
    return [review_out(r) for r in found]


def _decide(state: State, review_id: int, status: Literal["accepted", "rejected"]) -> ReviewOut:
    return review_out(state.db.write(reviews.decide_review, review_id, status, ADMIN))


@router.post(
    "/admin/reviews/{review_id}/accept",
    response_model=ReviewOut,
    summary="Accept a review as training data (operator)",
    responses={403: {"description": "No or wrong admin token"}, 404: {"description": "Unknown"}},
)
def accept_review(review_id: ReviewId, state: State, _admin: Admin) -> ReviewOut:
    return _decide(state, review_id, "accepted")


@router.post(
    "/admin/reviews/{review_id}/reject",
    response_model=ReviewOut,
    summary="Reject a review: never training data (operator)",
    responses={403: {"description": "No or wrong admin token"}, 404: {"description": "Unknown"}},
)
def reject_review(review_id: ReviewId, state: State, _admin: Admin) -> ReviewOut:
    return _decide(state, review_id, "rejected")
