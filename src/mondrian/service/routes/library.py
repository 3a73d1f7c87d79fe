"""The photographer's library over HTTP: delete a critique, a shoot as a batch, ratings
as XMP sidecars (the studio's pages, routes/studio_library.py, use these like any client).

- `DELETE /jobs/{id}`: forget a finished critique; its photo goes when nothing else uses it
  (storage/jobs.delete_job). Like `POST /jobs` it needs no operator token: the service binds
  to 127.0.0.1 by default and a browser's cross-site request is refused by guards.py.
  Refused with 409 while the job runs and when it has reviews (training data).
- `POST /batches`, then `POST /batches/{id}/jobs` per photo and advisor (the upload of
  `POST /jobs`), `GET /batches/{id}`: the shoot's photos with their scores and stars;
- `GET /jobs/{id}/sidecar.xmp`, `GET /batches/{id}/sidecars.zip`: the star ratings
  (reports/xmp.py, thresholds in docs/xmp.md), downloads only: no original is on the server.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from mondrian.reports import xmp
from mondrian.schema import DIMENSIONS
from mondrian.service.deps import ServiceState, State, finished_result, load_job
from mondrian.service.errors import Conflict
from mondrian.service.routes.analyze import (
    ERROR_RESPONSES,
    AdmittedRoute,
    AdvisorField,
    ImageUpload,
    ModeField,
    accept_upload,
    job_headers,
)
from mondrian.storage import batches
from mondrian.storage import jobs as job_store
from mondrian.storage.jobs import Job

router = APIRouter(tags=["library"])

BatchId = Annotated[str, Path(description="A batch id from `POST /batches`.", max_length=64)]


class Deleted(BaseModel):
    deleted: str = Field(description="The id of the job deleted.")
    photo_removed: bool = Field(description="False when another job or portfolio uses it.")


@router.delete(
    "/jobs/{job_id}",
    response_model=Deleted,
    summary="Delete a finished critique (its photo too, when nothing else uses it)",
    responses={404: {"description": "Unknown job"}, 409: {"description": "Running or reviewed"}},
)
def delete_job(job_id: str, state: State) -> Deleted:
    job = load_job(state.db, job_id)
    done = state.db.write(job_store.delete_job, state.settings.images_dir, job.id)
    return Deleted(deleted=job.id, photo_removed=done.photo_removed)


class BatchLinks(BaseModel):
    self: str
    jobs: str = Field(description="POST photos here, as to POST /jobs.")
    sidecars: str
    studio: str


class BatchCreated(BaseModel):
    id: str
    links: BatchLinks


class BatchPhoto(BaseModel):
    job: str
    status: Literal["queued", "running", "done", "failed"]
    photo: str | None
    advisor_id: str
    mode_used: str | None
    score: float | None = Field(description="The overall score, once done.")
    grade: str | None
    stars: int | None = Field(description="The rating from the score (docs/xmp.md).")
    dimensions: dict[str, int] = Field(description="Each dimension's score, once done.")


class BatchView(BaseModel):
    id: str
    source: str
    created_at: str
    photos: list[BatchPhoto] = Field(description="One per job, in the order queued.")
    links: BatchLinks


def batch_links(batch_id: str) -> BatchLinks:
    return BatchLinks(
        self=f"/batches/{batch_id}",
        jobs=f"/batches/{batch_id}/jobs",
        sidecars=f"/batches/{batch_id}/sidecars.zip",
        studio=f"/studio/shoots/{batch_id}",
    )


def batch_photo(job: Job) -> BatchPhoto:
    critique = (job.result or {}).get("critique", {})
    dims = critique.get("dimensions", {})
    return BatchPhoto(
        job=job.id,
        status=job.status,  # type: ignore[arg-type]
        photo=job.photo_name,
        advisor_id=job.advisor_id,
        mode_used=job.mode_used,
        score=job.score,
        grade=critique.get("overall_grade"),
        stars=None if job.score is None else xmp.stars(job.score),
        dimensions={k: dims[k]["score"] for k in DIMENSIONS if k in dims},
    )


def load_batch(state: ServiceState, batch_id: str) -> tuple[batches.Batch, list[Job]]:
    with state.db.read() as conn:
        return batches.require_batch(conn, batch_id), batches.batch_jobs(conn, batch_id)


@router.post("/batches", response_model=BatchCreated, status_code=201, summary="Start a shoot")
def create_batch(
    state: State,
    source: Annotated[
        Literal["api", "studio"], Query(description="Who starts it: an app, or the studio.")
    ] = "api",
) -> JSONResponse:
    batch = state.db.write(batches.create_batch, source)
    body = BatchCreated(id=batch.id, links=batch_links(batch.id))
    return JSONResponse(
        body.model_dump(mode="json"), status_code=201, headers={"Location": body.links.self}
    )


async def add_photo(
    batch_id: BatchId,
    request: Request,
    image: ImageUpload,
    advisor: AdvisorField,
    state: State,
    mode: ModeField = None,
) -> JSONResponse:
    await run_in_threadpool(load_batch, state, batch_id)  # an unknown batch stores nothing
    job = (await accept_upload(state, image, advisor, mode, wait=False, request=request)).job
    job = await run_in_threadpool(
        state.db.write, batches.add_to_batch, batch_id, job.id, image.filename
    )
    headers = {**job_headers(job), "Location": f"/jobs/{job.id}"}
    return JSONResponse(batch_photo(job).model_dump(mode="json"), status_code=202, headers=headers)


# As POST /jobs (routes/jobs.py): the queue's capacity is checked before the body is read.
router.add_api_route(
    "/batches/{batch_id}/jobs",
    add_photo,
    methods=["POST"],
    status_code=202,
    response_model=BatchPhoto,
    summary="Queue a critique of one photo of the shoot; follow it at /jobs/{id}",
    responses={**ERROR_RESPONSES, 404: {"description": "Unknown batch or advisor"}},
    route_class_override=AdmittedRoute,
)


@router.get("/batches/{batch_id}", response_model=BatchView, summary="A shoot's photos")
def get_batch(batch_id: BatchId, state: State) -> BatchView:
    batch, jobs = load_batch(state, batch_id)
    return BatchView(
        id=batch.id,
        source=batch.source,
        created_at=batch.created_at,
        photos=[batch_photo(job) for job in jobs],
        links=batch_links(batch.id),
    )


def photo_ratings(jobs: list[Job]) -> list[tuple[str, xmp.Rating]]:
    """One rating per photo (image) of the done jobs: the mean of its advisors' scores."""
    by_image: dict[str, list[Job]] = {}
    for job in jobs:
        if job.status == "done" and job.score is not None:
            by_image.setdefault(job.image_hash, []).append(job)
    return [
        (
            group[0].photo_name or f"{image_hash[:12]}.jpg",
            xmp.rating_of([j.score for j in group], [j.advisor_id for j in group]),
        )
        for image_hash, group in by_image.items()
    ]


@router.get(
    "/batches/{batch_id}/sidecars.zip",
    summary="The shoot's star ratings as XMP sidecars, zipped (docs/xmp.md)",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}},
        404: {"description": "Unknown batch"},
        409: {"description": "No critique of the shoot finished yet"},
    },
)
def batch_sidecars(batch_id: BatchId, state: State) -> Response:
    _batch, jobs = load_batch(state, batch_id)
    ratings = photo_ratings(jobs)
    if not ratings:
        raise Conflict(f"batch {batch_id} has no finished critique yet", code="not_done")
    return Response(
        xmp.sidecar_zip(ratings),
        media_type="application/zip",
        headers={"Content-Disposition": attachment(f"sidecars-{batch_id[:12]}.zip")},
    )


@router.get(
    "/jobs/{job_id}/sidecar.xmp",
    summary="A critique's star rating as an XMP sidecar (docs/xmp.md)",
    response_class=Response,
    responses={
        200: {"content": {"application/rdf+xml": {}}},
        404: {"description": "Unknown job"},
        409: {"description": "Job not done"},
    },
)
def job_sidecar(job_id: str, state: State) -> Response:
    job = load_job(state.db, job_id)
    finished_result(job)
    name, rating = photo_ratings([job])[0]
    # The darktable name: unambiguous where a RAW and a JPEG share a stem (reports/xmp.py).
    return Response(
        xmp.sidecar_xml(rating),
        media_type="application/rdf+xml",
        headers={"Content-Disposition": attachment(xmp.sidecar_names(name, set())[0])},
    )


def attachment(filename: str) -> str:
    """A Content-Disposition for a download: an ASCII name, and the UTF-8 one (RFC 6266)
    for a photo called, say, "Brücke.jpg"."""
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
