"""Asynchronous analyses: `POST /jobs`, `GET /jobs/{id}`, its HTML report, and `GET /jobs`,
the history a page at a time (reviews: routes/reviews.py).

`POST /jobs` takes its upload the way `POST /analyze` does (routes/analyze.py): the queue's
capacity checked before the body is read, the photo decoded once and stored with its job."""

from __future__ import annotations

from statistics import fmean
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from mondrian.reports.render import render_detailed, render_summary
from mondrian.reports.thumbnails import report_images
from mondrian.schema import DIMENSIONS, AnalysisResult
from mondrian.service.deps import ServiceState, State, finished_result, load_advisor, load_job
from mondrian.service.routes.analyze import (
    ERROR_RESPONSES,
    AdmittedRoute,
    AdvisorField,
    ImageUpload,
    ModeField,
    accept_upload,
    job_headers,
)
from mondrian.storage import profiles
from mondrian.storage.job_pages import MAX_LIMIT, page_jobs
from mondrian.storage.jobs import Job

router = APIRouter(tags=["jobs"])


class JobLinks(BaseModel):
    self: str
    report: str
    review: str


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    phase: Literal["queued", "preparing", "generating", "done", "failed"] = Field(
        description="Finer than status: a running job is preparing (no token yet) or generating."
    )
    progress: float = Field(description="0 to 1; 1 once done.")
    advisor_id: str
    mode_requested: str
    mode_used: str | None
    model: str
    variant: str = Field(description="'base' or 'fine_tuned', assigned by the model policy.")
    adapter: str | None = Field(description="Adapter version that served the job, if any.")
    attempts: int
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: AnalysisResult | None
    links: JobLinks


class JobAccepted(BaseModel):
    id: str
    status: str
    advisor_id: str
    mode_requested: str
    variant: str
    links: JobLinks


def _links(job_id: str) -> JobLinks:
    return JobLinks(
        self=f"/jobs/{job_id}",
        report=f"/jobs/{job_id}/report",
        review=f"/jobs/{job_id}/review",
    )


def job_view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        phase=job.phase,  # type: ignore[arg-type]
        progress=job.progress,
        advisor_id=job.advisor_id,
        mode_requested=job.mode_requested,
        mode_used=job.mode_used,
        model=job.model_id,
        variant=job.variant,
        adapter=job.adapter_ref,
        attempts=job.attempts,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=job.analysis(),
        links=_links(job.id),
    )


async def create_job(
    request: Request,
    image: ImageUpload,
    advisor: AdvisorField,
    state: State,
    mode: ModeField = None,
) -> JSONResponse:
    job = (await accept_upload(state, image, advisor, mode, wait=False, request=request)).job
    body = JobAccepted(
        id=job.id,
        status=job.status,
        advisor_id=job.advisor_id,
        mode_requested=job.mode_requested,
        variant=job.variant,
        links=_links(job.id),
    )
    headers = {**job_headers(job), "Location": f"/jobs/{job.id}"}
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


# Added, not decorated: only this route of the router checks the queue before its body.
router.add_api_route(
    "/jobs",
    create_job,
    methods=["POST"],
    status_code=202,
    response_model=JobAccepted,
    summary="Queue a critique; follow it at the Location given",
    responses=ERROR_RESPONSES,
    route_class_override=AdmittedRoute,
)


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="A job's status, progress and result",
    responses={404: {"description": "Unknown job"}},
)
def get_job(job_id: str, state: State) -> JobView:
    return job_view(load_job(state.db, job_id))


def portfolio_means(state: ServiceState, advisor_id: str) -> dict[str, float] | None:
    """The advisor's mean score per dimension over indexed portfolio images, if any."""
    with state.db.read() as conn:
        rows = profiles.list_profiles(conn, advisor_id)
    if not rows:
        return None
    return {key: fmean(p.critique.dimensions.scores()[key] for p in rows) for key in DIMENSIONS}


@router.get(
    "/jobs/{job_id}/report",
    response_class=HTMLResponse,
    summary="The HTML report of a finished job (summary, or ?kind=detailed)",
    responses={404: {"description": "Unknown job"}, 409: {"description": "Job not done"}},
)
def get_report(
    job_id: str,
    state: State,
    kind: Annotated[Literal["summary", "detailed"], Query()] = "summary",
) -> HTMLResponse:
    job = load_job(state.db, job_id)
    result = finished_result(job)
    advisor = load_advisor(state.db, job.advisor_id)
    render = render_detailed if kind == "detailed" else render_summary
    exemplars = [ref.image_hash for ref in result.references]
    images = report_images(
        state.db, state.settings.images_dir, photo_hash=job.image_hash, exemplar_hashes=exemplars
    )
    html = render(result, advisor, portfolio_means(state, advisor.id), images=images)
    return HTMLResponse(html, headers={"X-Job-ID": job.id})


# --- GET /jobs: the history, a page at a time (storage/job_pages.py) ---------------------


class JobSummary(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: str
    finished_at: str | None
    photo: str | None = Field(description="The photo's file name, where the client gave one.")
    advisor_id: str
    mode_requested: str
    mode_used: str | None
    score: float | None = Field(description="The critique's overall score, once done.")
    grade: str | None
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobSummary] = Field(description="Newest first.")
    next: str | None = Field(description="The next page (a URL with a cursor); null on the last.")


def _summary(job: Job) -> JobSummary:
    critique = (job.result or {}).get("critique", {})
    return JobSummary(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        created_at=job.created_at,
        finished_at=job.finished_at,
        photo=job.photo_name,
        advisor_id=job.advisor_id,
        mode_requested=job.mode_requested,
        mode_used=job.mode_used,
        score=job.score,
        grade=critique.get("overall_grade"),
        links=_links(job.id),
    )


@router.get(
    "/jobs",
    response_model=JobList,
    summary="Past jobs, newest first, a page at a time (follow `next`)",
    responses={422: {"description": "A bad limit, status or cursor"}},
)
def list_jobs(
    state: State,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="From the previous page's `next`.")
    ] = None,
    advisor: Annotated[str | None, Query(max_length=100, description="Only this advisor.")] = None,
    status: Annotated[
        Literal["queued", "running", "done", "failed"] | None, Query(description="Only these.")
    ] = None,
) -> JobList:
    with state.db.read() as conn:
        page = page_jobs(conn, limit=limit, cursor=cursor, advisor_id=advisor, status=status)
    link = None
    if page.next_cursor is not None:
        query = {"limit": limit, "cursor": page.next_cursor, "advisor": advisor, "status": status}
        link = "/jobs?" + urlencode({k: v for k, v in query.items() if v is not None})
    return JobList(jobs=[_summary(job) for job in page.jobs], next=link)
