"""`GET /metrics`: the app's Prometheus registry (service/metrics.py) in text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from mondrian.service.deps import State

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(state: State) -> Response:
    return Response(content=state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
