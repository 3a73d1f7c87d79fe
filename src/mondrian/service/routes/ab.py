"""`GET /ab/report`: base vs fine_tuned over the most recent jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mondrian.service.abreport import ABReport, compare_variants
from mondrian.service.deps import State
from mondrian.storage import jobs

router = APIRouter(tags=["service"])

DEFAULT_WINDOW = 10_000


@router.get("/ab/report", response_model=ABReport, summary="Compare the model variants")
def ab_report(
    state: State,
    limit: Annotated[
        int, Query(ge=1, le=1_000_000, description="How many of the latest jobs to compare.")
    ] = DEFAULT_WINDOW,
) -> ABReport:
    with state.db.read() as conn:
        recent = jobs.list_jobs(conn, limit=limit)
    return compare_variants(recent)
