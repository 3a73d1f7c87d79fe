"""`GET /advisors` and `GET /advisors/{advisor_id}`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mondrian.advisors import Advisor
from mondrian.service.deps import State, load_advisor
from mondrian.storage import adapters, profiles
from mondrian.storage import advisors as advisor_store

router = APIRouter(tags=["advisors"])


class AdvisorSummary(BaseModel):
    id: str
    name: str
    years: str
    active_adapter: str | None = Field(description="'advisor@vN' serving the lora mode.")
    profiles: int = Field(description="Indexed portfolio images (the rag mode needs some).")


class AdvisorDetail(AdvisorSummary):
    advisor: Advisor


def _summary(conn, advisor: Advisor) -> dict:
    active = adapters.get_active(conn, advisor.id)
    return {
        "id": advisor.id,
        "name": advisor.name,
        "years": advisor.years,
        "active_adapter": None if active is None else active.ref,
        "profiles": profiles.count_profiles(conn, advisor.id),
    }


@router.get("/advisors", response_model=list[AdvisorSummary], summary="All advisors")
def list_advisors(state: State) -> list[AdvisorSummary]:
    with state.db.read() as conn:
        return [AdvisorSummary(**_summary(conn, a)) for a in advisor_store.list_advisors(conn)]


@router.get(
    "/advisors/{advisor_id}",
    response_model=AdvisorDetail,
    summary="One advisor: bio, voice, weights, active adapter",
    responses={404: {"description": "Unknown advisor"}, 422: {"description": "Invalid id"}},
)
def get_advisor(advisor_id: str, state: State) -> AdvisorDetail:
    advisor = load_advisor(state.db, advisor_id)
    with state.db.read() as conn:
        return AdvisorDetail(**_summary(conn, advisor), advisor=advisor)
