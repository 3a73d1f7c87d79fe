"""`POST /analyze`: one critique, synchronously, through the same queue as `POST /jobs`.

Checks run cheapest first and all before anything is stored: queue capacity (before the
body is even read, `AdmittedRoute`), advisor id (its shape, then that it exists), mode,
then the upload, read with a size cap and decoded once, a few at a time
(`ServiceState.decode_slots`), into a working copy at the model's pixel budget. Only a
photo that passed every check is stored (by content hash), in the same transaction that
admits its job (service/admission.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from mondrian.errors import InvalidInput, MondrianError, PayloadTooLarge
from mondrian.images import MIN_SIDE, Photo, read_image
from mondrian.schema import AnalysisResult
from mondrian.service.admission import Upload
from mondrian.service.deps import ServiceState, State, check_mode, get_state, load_advisor
from mondrian.service.errors import AnalysisTimeout, error_body, error_response
from mondrian.service.worker import Submission
from mondrian.storage.jobs import Job


class AdmittedRoute(APIRoute):
    """A route that refuses work while the queue is full before FastAPI reads the body.

    FastAPI parses a form (spooling the upload) before any dependency runs, so the check
    sits in front of the route's own handler: a 503 costs no reading, decoding or storing."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def admitted(request: Request) -> Response:
            state = get_state(request)
            await run_in_threadpool(state.worker.check_capacity)
            return await handler(request)

        return admitted


# Its one route, POST /analyze, admits work.
router = APIRouter(tags=["analysis"], route_class=AdmittedRoute)

ERROR_RESPONSES = {
    404: {"description": "Unknown advisor"},
    413: {"description": "Image over the byte or pixel limit"},
    422: {"description": "Missing or invalid field, unknown mode, unreadable or refused image"},
    503: {"description": "Queue full (see Retry-After)"},
}

ImageUpload = Annotated[UploadFile, File(description="The photograph (JPEG, PNG, WebP, ...).")]
AdvisorField = Annotated[str, Form(description="Advisor id, e.g. 'ansel' (see GET /advisors).")]
ModeField = Annotated[
    str | None, Form(description="baseline, rag or lora (default: the service's default mode).")
]


async def read_capped(upload: UploadFile, limit: int) -> bytes:
    """At most `limit` bytes of the upload; one more means it is too large."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the image is larger than the limit of {limit} bytes", code="file_too_large"
        )
    return data


async def decode_upload(state: ServiceState, data: bytes) -> Photo:
    """The upload decoded into its working copy, by at most `decode_concurrency` at once:
    the semaphore is waited on in the event loop, so queued decodes hold no thread."""
    settings = state.settings
    async with state.decode_slots:
        return await run_in_threadpool(
            read_image,
            data,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_decode_pixels=max(settings.max_decode_pixels, settings.max_pixels),
            work_pixels=settings.max_pixels,
            min_side=MIN_SIDE,
        )


async def accept_upload(
    state: ServiceState,
    upload: UploadFile,
    advisor_id: str,
    mode: str | None,
    *,
    wait: bool,
    request: Request | None = None,
) -> Submission:
    """Check the request, then queue its job and store its photo, both or neither."""
    settings = state.settings
    if mode is None and request is not None and (await request.form()).get("mode") == "":
        # The form parser reads an empty field as an absent one: `mode=` would silently
        # get the default mode. An empty mode is a mistake to report.
        raise InvalidInput("the mode is empty: name one, or leave the field out", code="empty_mode")
    advisor = await run_in_threadpool(load_advisor, state.db, advisor_id)
    mode = check_mode(mode or settings.analysis_mode)
    data = await read_capped(upload, settings.max_upload_bytes)
    photo = await decode_upload(state, data)
    del data  # the working copy is what is kept
    image = Upload(
        data=photo.data,
        mime=photo.mime,
        width=photo.width,
        height=photo.height,
        name=upload.filename,
    )
    # The ticket the Arrivals middleware took for this request: open until the job starts.
    arrival = getattr(request.state, "arrival", None) if request is not None else None
    return await run_in_threadpool(
        lambda: state.worker.submit(advisor.id, image, mode, wait=wait, arrival=arrival)
    )


def job_headers(job: Job, result: AnalysisResult | None = None) -> dict[str, str]:
    headers = {
        "X-Job-ID": job.id,
        "X-Advisor-ID": job.advisor_id,
        "X-Requested-Mode": job.mode_requested,
        "X-Model-Variant": job.variant,
    }
    if result is not None:
        headers["X-Analysis-Mode"] = result.mode_used
        if result.model.adapter:
            headers["X-Adapter-Version"] = result.model.adapter
    return headers


@router.post(
    "/analyze",
    response_model=AnalysisResult,
    summary="Critique a photo and wait for the answer",
    responses={**ERROR_RESPONSES, 504: {"description": "Not finished in time; poll the job"}},
)
async def analyze(
    request: Request,
    image: ImageUpload,
    advisor: AdvisorField,
    state: State,
    mode: ModeField = None,
) -> JSONResponse:
    started = time.perf_counter()
    submission = await accept_upload(state, image, advisor, mode, wait=True, request=request)
    job = submission.job
    assert submission.done is not None
    try:
        result = await asyncio.wait_for(
            asyncio.wrap_future(submission.done), state.options.analyze_timeout_s
        )
    except TimeoutError:
        state.worker.forget(job.id)
        return error_response(
            AnalysisTimeout(
                f"job {job.id} did not finish within {state.options.analyze_timeout_s:g} s; "
                f"follow it at /jobs/{job.id}"
            ),
            job_headers(job),
        )
    except MondrianError as exc:
        return error_response(exc, job_headers(job))
    except Exception:
        # A bug in the model stack; the worker logged it and the job records the reason.
        return JSONResponse(
            error_body("internal_error", f"the analysis failed; see /jobs/{job.id}"),
            status_code=500,
            headers=job_headers(job),
        )
    state.metrics.analyze_seconds.labels(result.mode_used, job.variant).observe(
        time.perf_counter() - started
    )
    return JSONResponse(result.model_dump(mode="json"), headers=job_headers(job, result))
