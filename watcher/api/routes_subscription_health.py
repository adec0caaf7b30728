"""A subscription's health over the last 24 hours: what the console shows next to it.

Counted by the write that finishes each attempt (delivery/health_stats.py), so reading it
costs one round trip and delivering costs nothing more.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from watcher.api.auth import Caller
from watcher.api.context import ApiContext, get_context
from watcher.api.errors import error_responses
from watcher.api.field_types import SubscriptionIdText
from watcher.api.routes_subscriptions import owned_subscription
from watcher.delivery import health_stats
from watcher.delivery.subscriptions import Subscription
from watcher.timing import iso_timestamp

router = APIRouter(tags=["subscriptions"])

Ctx = Annotated[ApiContext, Depends(get_context)]
SubscriptionId = Annotated[SubscriptionIdText, Path()]


class LatencyOut(BaseModel):
    p50: float = Field(description="Median attempt latency (ms), estimated from buckets.")
    p99: float = Field(description="99th percentile (ms), estimated from buckets.")


class LastFailureOut(BaseModel):
    at: str = Field(description="When the failed attempt was made.")
    kind: str = Field(description="`http_status`, `timeout`, `network` or `refused_by_ssrf_guard`.")
    status_code: int | None = Field(description="The subscriber's answer; null if none.")
    error: str | None = Field(description="A short description (never a body or header).")


class SubscriptionHealthOut(BaseModel):
    subscription_id: str
    since: str = Field(description="Start of the window: the hour 23 hours before this one.")
    attempts: int
    succeeded: int
    failed: int
    success_rate: float | None = Field(description="succeeded / attempts; null: no attempts.")
    latency_ms: LatencyOut | None = Field(description="Null when there were no attempts.")
    last_failure: LastFailureOut | None = Field(description="The latest in the window.")
    enabled: bool
    disabled_reason: str | None


def health_out(sub: Subscription, summary: health_stats.HealthSummary) -> SubscriptionHealthOut:
    p50, p99 = summary.latency_p50_ms, summary.latency_p99_ms
    failure = summary.last_failure
    return SubscriptionHealthOut(
        subscription_id=sub.id,
        since=iso_timestamp(summary.since),
        attempts=summary.attempts,
        succeeded=summary.succeeded,
        failed=summary.failed,
        success_rate=summary.success_rate,
        latency_ms=LatencyOut(p50=p50, p99=p99) if p50 is not None and p99 is not None else None,
        last_failure=LastFailureOut(**vars(failure)) if failure is not None else None,
        enabled=sub.enabled,
        disabled_reason=sub.disabled_reason,
    )


@router.get(
    "/subscriptions/{subscription_id}/health",
    response_model=SubscriptionHealthOut,
    summary="A subscription's last 24 hours: success rate, latency, last failure",
    description=(
        "Counts the attempts of the current hour and the 23 before it. Latency percentiles "
        "are estimated from fixed buckets (10 ms to 30 s), as Prometheus does."
    ),
    responses=error_responses(401, 404, 422, 500, 503),
)
def subscription_health(
    subscription_id: SubscriptionId, ctx: Ctx, caller: Caller
) -> SubscriptionHealthOut:
    sub = owned_subscription(ctx, caller, subscription_id)
    now = ctx.runtime.clock()
    hours = ctx.runtime.deliveries.attempts.health_hours(sub.id, now)
    return health_out(sub, health_stats.summarize(hours, now))
