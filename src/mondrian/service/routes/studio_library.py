"""The studio's library pages: history, delete, a whole shoot (the API beneath them is
routes/library.py; the page helpers and templates are routes/studio.py's).

- `GET /studio/history`: past critiques as thumbnails, newest first, by advisor and by the
  mode that served, a page at a time (storage/job_pages.py's cursor); each opens its
  critique page and has a delete button;
- `POST /studio/jobs/{id}/delete`: the button's form (a plain POST: guards.py refuses it
  from another site), then back to the history;
- `GET /studio/thumbs/{id}.jpg`: a job's photo, small, by job id: no path from a request
  reaches the file system;
- `GET /studio/shoot`: several photos at once, one batch, progress per photo
  (static/studio/library.js);
- `GET /studio/shoots/{batch}`: the shoot, sorted and filtered by the overall score or any
  dimension, with its stars and the sidecars' download.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from mondrian.errors import InvalidInput, MondrianError, NotFound
from mondrian.modes import Mode
from mondrian.reports import xmp
from mondrian.reports.radar import DIMENSION_LABELS
from mondrian.reports.thumbnails import thumbnail_jpeg
from mondrian.schema import DIMENSIONS
from mondrian.service.deps import ServiceState, State, check_advisor_id, check_mode, load_job
from mondrian.service.routes.library import batch_photo, load_batch
from mondrian.service.routes.studio import STATIC_DIR, advisor_cards, page, upload_form
from mondrian.storage import images as image_store
from mondrian.storage import jobs as job_store
from mondrian.storage.job_pages import page_jobs
from mondrian.storage.jobs import Job

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 24
THUMB_SIDE = 320
STATIC_FILES = {"library.js": "text/javascript", "library.css": "text/css"}
SORT_LABELS = {"overall": "Overall score", **{k: DIMENSION_LABELS[k] for k in DIMENSIONS}}
SORT_KEYS = tuple(SORT_LABELS)


def stars_text(stars: int | None) -> str:
    return "" if stars is None else "★" * stars + "☆" * (5 - stars)


def card(job: Job, names: dict[str, str]) -> dict[str, Any]:
    view = batch_photo(job)
    return {
        "id": job.id,
        "photo": job.photo_name or f"photo {job.image_hash[:12]}",
        "advisor": names.get(job.advisor_id, job.advisor_id),
        "when": job.created_at[:16].replace("T", " "),
        "status": job.status,
        "mode": job.mode_used or job.mode_requested,
        "score": None if view.score is None else f"{view.score:.1f}",
        "grade": view.grade,
        "stars": view.stars,
        "stars_text": stars_text(view.stars),
        "dimensions": view.dimensions,
        "batch": job.batch_id,
    }


def history_context(
    state: ServiceState, advisor: str | None, mode: str | None, cursor: str | None
) -> dict[str, Any]:
    advisors = advisor_cards(state)
    names = {a["id"]: a["name"] for a in advisors}
    with state.db.read() as conn:
        found = page_jobs(conn, limit=PAGE_SIZE, cursor=cursor, advisor_id=advisor, mode_used=mode)
    more = None
    if found.next_cursor is not None:
        query = {"advisor": advisor, "mode": mode, "cursor": found.next_cursor}
        more = "/studio/history?" + urlencode({k: v for k, v in query.items() if v})
    return {
        "advisors": advisors,
        "modes": [m.value for m in Mode],
        "advisor": advisor or "",
        "mode": mode or "",
        "cards": [card(job, names) for job in found.jobs],
        "more": more,
        "first_page": cursor is None,
        "back": "/studio/history?" + urlencode({"advisor": advisor or "", "mode": mode or ""}),
        "error": None,
    }


def filters(advisor: str | None, mode: str | None) -> tuple[str | None, str | None]:
    # An empty select ("any") arrives as an empty string.
    advisor = check_advisor_id(advisor) if advisor else None
    mode = check_mode(mode).value if mode else None
    return advisor, mode


@router.get("/studio/history", response_class=HTMLResponse)
def history(
    state: State,
    advisor: Annotated[str | None, Query(max_length=100)] = None,
    mode: Annotated[str | None, Query(max_length=20)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    advisor, mode = filters(advisor, mode)
    return page("history.html", **history_context(state, advisor, mode, cursor))


def safe_back(back: str | None) -> str:
    """Where the form returns to: a studio page of this site only (no open redirect)."""
    if back and back.startswith("/studio/") and "//" not in back and "\\" not in back:
        return back
    return "/studio/history"


@router.post("/studio/jobs/{job_id}/delete", response_class=HTMLResponse)
def delete_from_studio(
    job_id: str, state: State, back: Annotated[str | None, Form(max_length=500)] = None
) -> Response:
    job = load_job(state.db, job_id)
    try:
        state.db.write(job_store.delete_job, state.settings.images_dir, job.id)
    except MondrianError as exc:  # running, or reviewed: the page says why, nothing goes
        context = history_context(state, None, None, None)
        context["error"] = exc.message
        return page("history.html", status_code=exc.http_status, **context)
    return RedirectResponse(safe_back(back), status_code=303)


@router.get("/studio/thumbs/{job_id}.jpg")
def thumbnail(job_id: str, state: State) -> Response:
    job = load_job(state.db, job_id)
    with state.db.read() as conn:
        path = image_store.image_path(conn, state.settings.images_dir, job.image_hash)
    try:
        data = thumbnail_jpeg(path.read_bytes(), THUMB_SIDE)
    except (OSError, ValueError) as exc:
        raise NotFound(f"the photo of job {job.id} cannot be read", code="no_photo") from exc
    # The photo of a job never changes; the job id names it.
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get("/studio/shoot", response_class=HTMLResponse)
def new_shoot(state: State) -> HTMLResponse:
    return page("shoot_new.html", **upload_form(state))


def sort_cards(
    cards: list[dict[str, Any]], key: str, descending: bool, minimum: float | None
) -> list[dict[str, Any]]:
    """Cards by the chosen score, best first (or last); those without one (not done yet)
    at the end either way; with `minimum`, only those scoring at least that."""

    def value(c: dict[str, Any]) -> float | None:
        if key == "overall":
            return None if c["score"] is None else float(c["score"])
        return c["dimensions"].get(key)

    scored = [c for c in cards if value(c) is not None]
    if minimum is not None:
        scored = [c for c in scored if value(c) >= minimum]
    scored.sort(key=lambda c: value(c), reverse=descending)
    waiting = [] if minimum is not None else [c for c in cards if value(c) is None]
    for c in scored:
        c["sort_value"] = value(c)
    return scored + waiting


def least_score(text: str | None) -> float | None:
    """The filter's lowest score; the form sends an empty field as `min=`."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 10.0:
        raise InvalidInput(f"min is a score from 0 to 10, got {text!r}", code="bad_min")
    return value


@router.get("/studio/shoots/{batch_id}", response_class=HTMLResponse)
def shoot(
    batch_id: str,
    state: State,
    sort: Annotated[str, Query(max_length=40)] = "overall",
    order: Annotated[str, Query(max_length=4)] = "desc",
    advisor: Annotated[str | None, Query(max_length=100)] = None,
    min_text: Annotated[str | None, Query(alias="min", max_length=10)] = None,
) -> HTMLResponse:
    if sort not in SORT_KEYS:
        raise InvalidInput(f"sort by one of {', '.join(SORT_KEYS)}, got {sort[:40]!r}")
    if order not in ("asc", "desc"):
        raise InvalidInput(f"order is asc or desc, got {order!r}")
    advisor, _ = filters(advisor, None)
    minimum = least_score(min_text)
    batch, jobs = load_batch(state, batch_id)
    advisors = advisor_cards(state)
    names = {a["id"]: a["name"] for a in advisors}
    present = sorted({job.advisor_id for job in jobs})
    cards = [card(job, names) for job in jobs if advisor in (None, job.advisor_id)]
    return page(
        "shoot.html",
        batch=batch,
        cards=sort_cards(cards, sort, order == "desc", minimum),
        total=len(jobs),
        pending=sum(not job.finished for job in jobs),
        rated=any(job.status == "done" for job in jobs),
        sort=sort,
        order=order,
        minimum="" if minimum is None else f"{minimum:g}",
        advisor=advisor or "",
        advisors=[{"id": i, "name": names.get(i, i)} for i in present],
        sort_keys=list(SORT_LABELS.items()),
        sort_label=SORT_LABELS[sort],
        thresholds=xmp.STARS,
    )


@router.get("/static/studio/library/{name}")
def library_static(name: str) -> FileResponse:
    # A fixed list, as routes/studio.py's: no path from the request reaches the disk.
    if name not in STATIC_FILES:
        raise NotFound(f"no studio file {name[:80]!r}", code="not_found")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])
