"""What request handlers depend on, in one place: the app's state and checked inputs.

Every user-supplied name is checked here before it reaches storage: advisor ids against
the advisor pattern (so `../etc` is refused before any lookup), job ids against the
shape `create_job` gives them, modes against the known modes.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from mondrian.advisors import Advisor
from mondrian.advisors.model import ADVISOR_ID_PATTERN
from mondrian.config import Settings
from mondrian.errors import InvalidInput, NotFound, Unavailable, parse_choice
from mondrian.modes import Mode
from mondrian.schema import AnalysisResult
from mondrian.service.errors import Conflict
from mondrian.service.sign_in_limit import SignInLimit
from mondrian.storage import advisors as advisor_store
from mondrian.storage import jobs as job_store
from mondrian.storage.db import Database
from mondrian.storage.jobs import Job

if TYPE_CHECKING:
    from mondrian.backends.protocol import Backend
    from mondrian.service.metrics import ServiceMetrics
    from mondrian.service.options import ServiceOptions
    from mondrian.service.policy import ModelPolicy
    from mondrian.service.worker import Worker

_ADVISOR_ID = re.compile(ADVISOR_ID_PATTERN)
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex, as storage.jobs.create_job makes them


@dataclass
class ServiceState:
    """Everything a running app holds; built by the lifespan in `app.py`."""

    settings: Settings
    options: ServiceOptions
    policy: ModelPolicy
    metrics: ServiceMetrics
    db: Database
    backend: Backend
    worker: Worker
    # Uploads decoded at once: each holds up to `max_decode_pixels` while it decodes.
    decode_slots: asyncio.Semaphore = field(init=False)
    # Failed operator sign-ins per client address (the studio's sign-in form).
    sign_ins: SignInLimit = field(init=False)

    def __post_init__(self) -> None:
        self.decode_slots = asyncio.Semaphore(self.settings.decode_concurrency)
        self.sign_ins = SignInLimit(self.settings.sign_in_attempts, self.settings.sign_in_window_s)


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "mondrian", None)
    if state is None:
        raise Unavailable("the service is starting or stopping; try again", code="not_ready")
    return state


State = Annotated[ServiceState, Depends(get_state)]
"""A handler's parameter `state: State` gets the running app's `ServiceState`."""


def check_advisor_id(advisor_id: str) -> str:
    if not isinstance(advisor_id, str) or not _ADVISOR_ID.fullmatch(advisor_id):
        shown = advisor_id if isinstance(advisor_id, str) else type(advisor_id).__name__
        raise InvalidInput(
            f"invalid advisor id {shown[:80]!r}: use 1 to 64 of a-z, 0-9, '_' and '-'",
            code="invalid_advisor_id",
        )
    return advisor_id


def load_advisor(db: Database, advisor_id: str) -> Advisor:
    check_advisor_id(advisor_id)
    with db.read() as conn:
        advisor = advisor_store.get_advisor(conn, advisor_id)
    if advisor is None:
        raise NotFound(f"unknown advisor {advisor_id!r}; see GET /advisors", code="unknown_advisor")
    return advisor


def check_mode(mode: str) -> Mode:
    return parse_choice(Mode, mode, "mode", code="unknown_mode")


def load_job(db: Database, job_id: str) -> Job:
    # fullmatch: `$` alone lets a trailing newline through. A control character is bad
    # input (422), any other malformed id just names no job (404).
    if not job_id.isprintable():
        raise InvalidInput(f"invalid job id {job_id[:80]!r}", code="invalid_job_id")
    if not _JOB_ID.fullmatch(job_id):
        raise NotFound(f"unknown job {job_id[:80]!r}", code="unknown_job")
    with db.read() as conn:
        job = job_store.get_job(conn, job_id)
    if job is None:
        raise NotFound(f"unknown job {job_id!r}", code="unknown_job")
    return job


def finished_result(job: Job) -> AnalysisResult:
    """The critique of a done job. Every route serving a finished job's files asks here,
    so all answer alike: 409 `not_done` for a job that exists but has no critique (queued,
    running, failed), where `load_job` gave 404 `unknown_job` for one that does not."""
    result = job.analysis()
    if job.status != "done" or result is None:
        detail = f": {job.error}" if job.error else ""
        raise Conflict(
            f"job {job.id} is {job.status}{detail}; it has no critique yet", code="not_done"
        )
    return result
