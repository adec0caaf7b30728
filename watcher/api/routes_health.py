"""Liveness, readiness and Prometheus metrics (no bearer token: for probes and scrapers)."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Request, Response

from watcher.api.context import ApiContext, get_context
from watcher.api.errors import ApiError, error_responses
from watcher.api.metrics import CONTENT_TYPE, render
from watcher.api.response_models import Health, Ready

router = APIRouter(tags=["health"])

Ctx = Annotated[ApiContext, Depends(get_context)]


@router.get("/healthz", response_model=Health, summary="The process is up (always 200)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Ready to serve: Redis answers PING",
    responses=error_responses(503),
)
def readyz(ctx: Ctx) -> Ready:
    try:
        ctx.runtime.ping()
    except redis.RedisError as exc:
        raise ApiError(
            503,
            "not_ready",
            f"Redis is not reachable ({type(exc).__name__})",
            headers={"Retry-After": "5"},
        ) from None
    return Ready(status="ready", redis="ok")


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics, read from Redis at scrape time",
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(500),
    },
)
def metrics(request: Request) -> Response:
    return Response(content=render(request.app.state.metrics), media_type=CONTENT_TYPE)
