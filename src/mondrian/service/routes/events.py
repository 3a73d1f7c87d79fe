"""`GET /jobs/{id}/events`: a job's state as a server-sent events stream, for the studio's
progress bar and for any app that would rather not poll.

The stream polls the job's row every `POLL_S` (the worker already writes status and
progress there, so no worker hook is needed) and sends an event whenever what a client
would show changes, plus a comment line as a heartbeat so proxies keep the connection.
It ends with one final event (`done`, carrying the result's URLs, or `failed`, carrying
the error) or when the client goes away.

    event: progress
    data: {"id": "...", "status": "queued", "phase": "queued", "stage": "queued",
           "tokens": 0, "position": 2, "progress": 0}

`progress` is the share of the expected answer written (service/progress.py). `stage` is
finer than `phase` (which keeps the names of `GET /jobs/{id}`): queued, profiling,
retrieving, critiquing, done or failed, with `tokens`, the tokens of the stage's pass so far;
both are read from the worker's memory (service/stages.py), not the job row.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from mondrian.service.deps import State, load_job
from mondrian.service.stages import LiveStages, stage_of_phase
from mondrian.storage.db import Database
from mondrian.storage.jobs import Job

router = APIRouter(tags=["jobs"])

POLL_S = 0.25
HEARTBEAT_S = 10.0  # a comment line at least this often keeps idle proxies from closing it

_AHEAD = """
    SELECT COUNT(*) FROM jobs
    WHERE status = 'queued'
      AND (created_at < ? OR (created_at = ? AND rowid < (SELECT rowid FROM jobs WHERE id = ?)))
"""


def queue_position(conn: sqlite3.Connection, job: Job) -> int:
    """1 for the job the worker claims next: the order of storage.job_leases.claim_next_job."""
    (ahead,) = conn.execute(_AHEAD, (job.created_at, job.created_at, job.id)).fetchone()
    return int(ahead) + 1


def job_event(
    db: Database, job_id: str, stages: LiveStages | None = None
) -> tuple[str, dict[str, Any]]:
    """The event name and payload for the job's current row (and its live stage)."""
    job = load_job(db, job_id)
    live = stages.get(job.id) if stages is not None and job.status == "running" else None
    payload: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "phase": job.phase,
        "stage": live.name if live is not None else stage_of_phase(job.phase),
        "tokens": live.tokens if live is not None else 0,
        "progress": round(job.progress, 4),
        "advisor_id": job.advisor_id,
        "position": None,
    }
    if job.status == "queued":
        with db.read() as conn:
            payload["position"] = queue_position(conn, job)
    if job.status == "done":
        payload["links"] = {
            "job": f"/jobs/{job.id}",
            "report": f"/jobs/{job.id}/report",
            "studio": f"/studio/jobs/{job.id}",
        }
        return "done", payload
    if job.status == "failed":
        payload["error"] = job.error or "the job failed"
        return "failed", payload
    return "progress", payload


def sse(event: str, payload: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def stream(
    request: Request, db: Database, job_id: str, stages: LiveStages | None = None
) -> AsyncIterator[str]:
    last: dict[str, Any] | None = None
    quiet = 0.0
    yield "retry: 1000\n\n"  # how long an EventSource waits before reconnecting
    while True:
        if await request.is_disconnected():
            return
        if not db.is_open:  # the service stopped under the stream
            yield sse("failed", {"id": job_id, "error": "the service is stopping"})
            return
        event, payload = await run_in_threadpool(job_event, db, job_id, stages)
        if payload != last:
            yield sse(event, payload)
            last, quiet = payload, 0.0
            if event != "progress":
                return
        elif quiet >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_S)
        quiet += POLL_S


@router.get(
    "/jobs/{job_id}/events",
    summary="A job's progress as server-sent events, ending with `done` or `failed`",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        404: {"description": "Unknown job"},
    },
)
async def job_events(job_id: str, request: Request, state: State) -> StreamingResponse:
    # Checked before the stream starts, so an unknown job is a JSON 404, not an event.
    await run_in_threadpool(load_job, state.db, job_id)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        stream(request, state.db, job_id, state.worker.stages),
        media_type="text/event-stream",
        headers=headers,
    )
