"""The studio: the pages a photographer uses in a browser, at `/` of `mondrian serve`.

- `GET /`: upload a photo (drag-and-drop or the file picker), choose advisors and a mode;
  static/studio/studio.js posts one `POST /jobs` per advisor and follows each job's
  `GET /jobs/{id}/events` (polling `GET /jobs/{id}` where the stream fails);
- `GET /studio/jobs/{id}`: the critique page (or the job's progress until it is done);
- `GET /studio/jobs/{id}/critique.{json,md,pdf}`: the result as a download (Markdown and
  PDF by reports/markdown.py and reports/pdf.py, as `mondrian export` writes them);
- `GET /studio/jobs/{id}/exemplars/{n}`: the thumbnail of the job's n-th RAG exemplar;
- `GET /studio/jobs/{id}/compare`: the critiques of the same photo side by side, one
  column per advisor and mode (service/studio_views.py picks them);
- `GET /static/studio/{name}`: the page's own script and style sheet.

Pages are server-rendered with Jinja (autoescaped: model and user text stay inert) and use
the API as any client would; the script is a file of the package, never inline, so the
pages run under guards.STUDIO_CSP.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from mondrian.advisors import Advisor
from mondrian.errors import NotFound
from mondrian.images import ALLOWED_NAMES, IMAGE_SUFFIXES, read_image_file
from mondrian.modes import FALLBACK_ORDER, Mode
from mondrian.reports.facts_view import facts_view
from mondrian.reports.markdown import render_markdown
from mondrian.reports.thumbnails import report_images
from mondrian.schema import AnalysisResult
from mondrian.service import studio_views as views
from mondrian.service.deps import ServiceState, State, finished_result, load_advisor, load_job
from mondrian.service.routes.jobs import portfolio_means
from mondrian.storage import adapters as adapter_store
from mondrian.storage import advisors as advisor_store
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.storage import reviews as review_store
from mondrian.storage.images import EXTENSIONS
from mondrian.storage.jobs import Job

router = APIRouter(include_in_schema=False)

SERVICE_DIR = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = SERVICE_DIR / "templates" / "studio"
STATIC_DIR = SERVICE_DIR / "static" / "studio"
STATIC_FILES = {"studio.js": "text/javascript", "studio.css": "text/css"}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = environment().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def one_line(text: str, limit: int = 160) -> str:
    """The bio's first sentence, cut at a word under `limit` characters."""
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0] + "…"


def advisor_cards(state: ServiceState) -> list[dict[str, str]]:
    with state.db.read() as conn:
        advisors = advisor_store.list_advisors(conn)
    return [
        {"id": a.id, "name": a.name, "years": a.years, "bio": one_line(a.bio)} for a in advisors
    ]


def upload_form(state: ServiceState) -> dict[str, Any]:
    """What an upload form shows and checks in the page (the home page's and a shoot's)."""
    settings = state.settings
    return {
        "advisors": advisor_cards(state),
        "modes": [m.value for m in Mode],
        "default_mode": settings.analysis_mode,
        "max_bytes": settings.max_upload_bytes,
        "max_mib": f"{settings.max_upload_bytes / 2**20:.0f}",
        # By type or by name: a browser gives RAW files no type, or one of its own.
        "accept": ",".join([*sorted(EXTENSIONS), *sorted(IMAGE_SUFFIXES)]),
        "formats": ALLOWED_NAMES,
    }


@router.get("/", response_class=HTMLResponse)
def studio_home(state: State) -> HTMLResponse:
    return page("index.html", **upload_form(state))


def why_fell_back(state: ServiceState, advisor_id: str, requested: str, used: str) -> list[str]:
    """Why each mode before `used` could not serve, as the state reads now (the result
    records which mode served, not why; preflight.py reads the same two facts)."""
    if requested == used or requested not in FALLBACK_ORDER:
        return []
    reasons = []
    with state.db.read() as conn:
        for mode in FALLBACK_ORDER[FALLBACK_ORDER.index(Mode(requested)) :]:
            if mode == used:
                break
            if mode == Mode.LORA and adapter_store.get_active(conn, advisor_id) is None:
                reasons.append(f"{mode}: the advisor has no active adapter")
            elif mode == Mode.RAG and profile_store.count_profiles(conn, advisor_id) == 0:
                reasons.append(f"{mode}: the advisor has no indexed portfolio")
            else:
                reasons.append(f"{mode}: unavailable when the job ran")
    return reasons


def critique_context(state: ServiceState, job: Job, advisor: Advisor) -> dict[str, Any]:
    result = job.analysis()
    assert result is not None  # the caller checked the job is done
    critique = views.scored(result, advisor)
    images = report_images(state.db, state.settings.images_dir, photo_hash=job.image_hash)
    means = portfolio_means(state, advisor.id)
    with state.db.read() as conn:  # the reviews it has (templates/studio/_critique_reviews.html)
        reviews = review_store.list_reviews(conn, job_id=job.id)
    return {
        "photo": images.photo,
        "radar": views.radar(critique, means),
        "has_means": means is not None,
        "facts_view": facts_view(result),
        "exemplars": views.exemplar_rows(job, result),
        "same_photo": len(views.jobs_of_photo(state.db, job)),
        "overall": f"{critique.overall_score:.1f}",
        "grade": critique.overall_grade,
        "description": critique.image_description,
        "dimensions": views.dimension_rows(result),
        "strengths": list(critique.strengths),
        "improvements": list(critique.improvements),
        "mode_requested": result.mode_requested,
        "mode_used": result.mode_used,
        "fallback": why_fell_back(state, advisor.id, result.mode_requested, result.mode_used),
        "model": result.model,
        "reviews": reviews,
    }


@router.get("/studio/jobs/{job_id}", response_class=HTMLResponse)
async def critique_page(job_id: str, state: State) -> HTMLResponse:
    job = await run_in_threadpool(load_job, state.db, job_id)
    advisor = await run_in_threadpool(load_advisor, state.db, job.advisor_id)
    context: dict[str, Any] = {
        "job": job,
        "advisor": advisor,
        "disclaimer": state.settings.studio_disclaimer,
    }
    if job.status != "done" or job.analysis() is None:
        return page("pending.html", **context)
    context.update(await run_in_threadpool(critique_context, state, job, advisor))
    return page("critique.html", **context)


@router.get("/studio/jobs/{job_id}/critique.json")
def critique_json(job_id: str, state: State) -> JSONResponse:
    job = load_job(state.db, job_id)
    result = finished_result(job)
    return JSONResponse(result.model_dump(mode="json"), headers=attachment(job, "json"))


def attachment(job: Job, suffix: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="critique-{job.id}.{suffix}"'}


def finished(state: ServiceState, job_id: str) -> tuple[Job, AnalysisResult, Advisor]:
    job = load_job(state.db, job_id)
    return job, finished_result(job), load_advisor(state.db, job.advisor_id)


@router.get("/studio/jobs/{job_id}/critique.md")
def critique_markdown(job_id: str, state: State) -> Response:
    job, result, advisor = finished(state, job_id)
    text = render_markdown(result, advisor, views.export_facts(job))
    headers = attachment(job, "md")
    return Response(text, media_type="text/markdown; charset=utf-8", headers=headers)


@router.get("/studio/jobs/{job_id}/critique.pdf")
def critique_pdf(job_id: str, state: State) -> Response:
    from mondrian.reports.pdf import render_pdf  # fpdf2, loaded when a PDF is asked for

    job, result, advisor = finished(state, job_id)
    settings = state.settings
    with state.db.read() as conn:
        path = image_store.image_path(conn, settings.images_dir, job.image_hash)
    photo = read_image_file(
        path, max_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels
    )
    data = render_pdf(result, advisor, views.export_facts(job), photo.image)
    return Response(data, media_type="application/pdf", headers=attachment(job, "pdf"))


@router.get("/studio/jobs/{job_id}/exemplars/{index}")
def exemplar_image(job_id: str, index: int, state: State) -> Response:
    # By its place in the job's result, never by a path or a hash the client names.
    job = load_job(state.db, job_id)
    finished_result(job)  # an unfinished job has no exemplars yet: 409, as its downloads
    data = views.exemplar_jpeg(state.db, state.settings.images_dir, job, index)
    # A job's exemplars never change: the browser may keep them.
    headers = {"Cache-Control": "private, max-age=86400"}
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/studio/jobs/{job_id}/compare", response_class=HTMLResponse)
async def compare_page(job_id: str, state: State) -> HTMLResponse:
    job = await run_in_threadpool(load_job, state.db, job_id)
    return page("compare.html", **await run_in_threadpool(compare_context, state, job))


def compare_context(state: ServiceState, job: Job) -> dict[str, Any]:
    jobs = views.jobs_of_photo(state.db, job)
    pairs = [(other, load_advisor(state.db, other.advisor_id)) for other in jobs]
    means = {advisor.id: portfolio_means(state, advisor.id) for _, advisor in pairs}
    columns, rows = views.compare_columns(pairs, means)
    images = report_images(state.db, state.settings.images_dir, photo_hash=job.image_hash)
    return {
        "job": job,
        "photo": images.photo,
        "columns": columns,
        "rows": rows,
        "pending": any(not c["job"].finished for c in columns),
        "disclaimer": state.settings.studio_disclaimer,
    }


@router.get("/static/studio/{name}")
def studio_static(name: str, request: Request) -> FileResponse:
    # A fixed list, not a directory: no path from the request reaches the file system.
    if name not in STATIC_FILES:
        raise NotFound(f"no studio file {name[:80]!r}", code="not_found")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])
