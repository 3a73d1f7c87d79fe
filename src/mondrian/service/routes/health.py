"""`GET /health`: what is loaded and how busy the service is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

import mondrian
from mondrian.service.deps import State

router = APIRouter(tags=["service"])


class QueueInfo(BaseModel):
    depth: int = Field(description="Jobs waiting for the model.")
    capacity: int = Field(description="Jobs that may wait; more get a 503.")
    running: str | None = Field(description="Id of the longest-running job, if any.")
    running_jobs: list[str] = Field(
        default_factory=list, description="Ids of every job being run now (see concurrency)."
    )
    worker_alive: bool


class Health(BaseModel):
    status: str = Field(
        description="'ok', or 'degraded' when the worker thread is gone or the backend's "
        "server does not answer."
    )
    version: str
    model: str
    backend: str
    device: str | None
    dtype: str | None
    fingerprint: str | None
    adapters: list[str] = Field(description="Adapters resident in the model now.")
    backend_state: str | None = Field(
        default=None,
        description="A remote backend's state (vllm: 'ok', or why its server cannot serve).",
    )
    default_mode: str
    policy: dict[str, Any]
    queue: QueueInfo


@router.get("/health", response_model=Health, summary="Model, policy and queue status")
def health(state: State) -> Health:
    info = state.backend.info()
    worker = state.worker
    running = worker.running_jobs
    backend_state = _opt(info.get("state"))
    return Health(
        status="ok" if worker.alive and backend_state in (None, "ok") else "degraded",
        version=mondrian.__version__,
        model=str(info.get("model", state.backend.model_id)),
        backend=str(info.get("backend", state.backend.name)),
        device=_opt(info.get("device")),
        dtype=_opt(info.get("dtype")),
        fingerprint=_opt(info.get("fingerprint")),
        adapters=[str(a) for a in state.backend.adapters()],
        backend_state=backend_state,
        default_mode=state.settings.analysis_mode,
        policy=state.policy.describe(),
        queue=QueueInfo(
            depth=worker.queue_depth(),
            capacity=state.options.queue_size,
            running=running[0] if running else None,
            running_jobs=running,
            worker_alive=worker.alive,
        ),
    )


def _opt(value: object) -> str | None:
    return None if value is None else str(value)
