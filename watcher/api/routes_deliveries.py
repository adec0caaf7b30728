"""The delivery log (every attempt), manual re-sends, and the event history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query

from watcher.access.audit import AuditAction
from watcher.access.principal import Principal
from watcher.api.auth import Caller
from watcher.api.context import ApiContext, get_context
from watcher.api.errors import error_responses, invalid, not_found
from watcher.api.field_types import (
    DeliveryIdText,
    DeliveryStatus,
    EventIdText,
    EventTypeName,
    PaymentIdText,
    Rfc3339,
    StreamCursor,
    SubscriptionIdText,
)
from watcher.api.pagination import cursor_checked
from watcher.api.response_models import (
    DeliveryDetail,
    DeliveryOut,
    DeliveryPage,
    EventOut,
    EventPage,
)
from watcher.api.routes_audit import Audit
from watcher.delivery.store import Delivery
from watcher.delivery.subscriptions import SubscriptionNotFound
from watcher.logging import get_logger

log = get_logger(__name__)

router = APIRouter()

Ctx = Annotated[ApiContext, Depends(get_context)]
DeliveryId = Annotated[DeliveryIdText, Path()]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=1024)]
OptionalSubscriptionId = Annotated[
    SubscriptionIdText | None, Query(description="Only this subscription's")
]
OptionalEventId = Annotated[EventIdText | None, Query(description="Only this event's")]
OptionalPaymentId = Annotated[PaymentIdText | None, Query(description="Only this payment's")]


def delivery_out(delivery: Delivery) -> DeliveryOut:
    data = delivery.to_public()
    data.pop("attempt_log", None)
    return DeliveryOut.model_validate(data)


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    tags=["deliveries"],
    summary="List deliveries, newest first",
    responses=error_responses(401, 422, 500, 503),
)
def list_deliveries(
    ctx: Ctx,
    caller: Caller,
    subscription_id: OptionalSubscriptionId = None,
    status: Annotated[DeliveryStatus | None, Query(description="Only this status")] = None,
    event_id: OptionalEventId = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> DeliveryPage:

    def keep(delivery: Delivery) -> bool:
        if not caller.owns(delivery.app):
            return False
        if status is not None and delivery.status != status:
            return False
        return event_id is None or delivery.event_id == event_id

    if subscription_id and not _may_list(ctx, caller, subscription_id):
        return DeliveryPage(items=[], next_cursor=None)  # what an unknown id answers
    with cursor_checked():
        items, next_cursor = ctx.runtime.deliveries.history.page(
            subscription_id=subscription_id, cursor=cursor, limit=limit, keep=keep
        )
    return DeliveryPage(items=[delivery_out(d) for d in items], next_cursor=next_cursor)


def _may_list(ctx: ApiContext, caller: Principal, subscription_id: str) -> bool:
    """Another app's subscription is not scanned at all: a scan of its deliveries, every one
    refused, would end in a cursor an unknown id never gets."""
    try:
        sub = ctx.runtime.subscriptions.get(subscription_id)
    except SubscriptionNotFound:
        return True  # gone, or never was: its index is empty or holds what `keep` allows
    return caller.owns(sub.app)


@router.get(
    "/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    tags=["deliveries"],
    summary="One delivery with every attempt",
    responses=error_responses(401, 404, 422, 500, 503),
)
def get_delivery(delivery_id: DeliveryId, ctx: Ctx, caller: Caller) -> DeliveryDetail:
    delivery = ctx.runtime.deliveries.get(delivery_id, with_attempts=True)
    if delivery is None or not caller.owns(delivery.app):
        raise not_found(f"no delivery with id {delivery_id!r}")
    return DeliveryDetail.model_validate(delivery.to_public())


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    tags=["deliveries"],
    summary="Send this delivery again (same event, same webhook-id)",
    responses=error_responses(401, 404, 422, 500, 503),
)
def redeliver(
    delivery_id: DeliveryId, ctx: Ctx, caller: Caller, background: BackgroundTasks, audit: Audit
) -> DeliveryOut:
    rt = ctx.runtime
    found = rt.deliveries.get(delivery_id)
    if found is None or not caller.owns(found.app):
        raise not_found(f"no delivery with id {delivery_id!r}")
    delivery = rt.deliveries.redeliver(delivery_id, rt.clock())
    if delivery is None:
        raise not_found(f"no delivery with id {delivery_id!r}")
    background.add_task(ctx.kick_quietly)
    log.info(
        "redelivery requested",
        delivery_id=delivery_id,
        subscription_id=delivery.subscription_id,
        payment_id=delivery.payment_id,
    )
    audit.record(AuditAction.REDELIVERED, delivery_id, delivery.subscription_id)
    return delivery_out(delivery)


def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


@router.get(
    "/events",
    response_model=EventPage,
    tags=["events"],
    summary="The event history, for receivers catching up",
    description=(
        "Every event the watcher emitted, oldest first by default (`order=desc` for newest "
        "first). A receiver that was down pages with `cursor` from where it stopped."
    ),
    responses=error_responses(401, 422, 500, 503),
)
def list_events(
    ctx: Ctx,
    caller: Caller,
    type: Annotated[EventTypeName | None, Query(description="Only this event type")] = None,
    payment_id: OptionalPaymentId = None,
    since: Annotated[
        Rfc3339 | None, Query(description="RFC 3339; events at or after this time")
    ] = None,
    until: Annotated[
        Rfc3339 | None, Query(description="RFC 3339; events at or before this time")
    ] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    limit: Limit = 50,
    cursor: Annotated[StreamCursor | None, Query()] = None,
) -> EventPage:
    since_ms, until_ms = _ms(since), _ms(until)
    if since_ms is not None and since_ms < 0:
        raise invalid("query.since", "must be after 1970-01-01")
    if until_ms is not None and until_ms < 0:
        raise invalid("query.until", "must be after 1970-01-01")
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise invalid("query.until", "must not be before `since`")

    with cursor_checked():
        events, next_cursor = ctx.runtime.deliveries.history.event_page(
            cursor=cursor,
            limit=limit,
            newest_first=order == "desc",
            event_type=type,
            payment_id=payment_id,
            since_ms=since_ms,
            until_ms=until_ms,
            app=caller.app_id,  # None (an admin): every app's
        )
    items = [EventOut.model_validate(event) for event in events]
    return EventPage(items=items, next_cursor=next_cursor)
