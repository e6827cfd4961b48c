"""Liveness, readiness and Prometheus metrics (outside ``/api/v1``, unauthenticated, not rate limited)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from backend.app.api.deps import ReadConnection
from backend.app.db.queries.bot_status import readiness
from backend.app.schemas.system import HealthOut, ReadyOut

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthOut, summary="Liveness: the process answers")
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Database unreachable or not migrated"}},
    summary="Readiness: database reachable and migrations current",
)
async def ready(connection: ReadConnection) -> JSONResponse:
    state = await readiness(connection)
    body = ReadyOut(
        status="ready" if state.ready else "not_ready",
        database=state.database,
        migration_current=state.current,
        migration_head=state.head,
        detail=state.detail,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if state.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    payload = await request.app.state.metrics.render()
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
