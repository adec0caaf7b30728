"""Subscriptions: where webhooks go, which events, the secrets that sign them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Response

from watcher.access.audit import AuditAction
from watcher.access.principal import Principal
from watcher.access.tenants import settle_for_app
from watcher.api.auth import Caller
from watcher.api.context import ApiContext, get_context
from watcher.api.errors import ApiError, error_responses, invalid, not_found
from watcher.api.field_types import QueryBool, SubscriptionIdText
from watcher.api.pagination import cursor_checked
from watcher.api.request_models import RecoverRequest, SubscriptionCreate, SubscriptionUpdate
from watcher.api.response_models import (
    RecoverResult,
    RotatedSecret,
    SubscriptionOut,
    SubscriptionPage,
    SubscriptionWithSecret,
    TestEventResult,
)
from watcher.api.routes_audit import Audit
from watcher.delivery.recovery import RECOVERABLE, Selection
from watcher.delivery.recovery import recover as recover_deliveries
from watcher.delivery.store import delivery_id_for
from watcher.delivery.subscription_checks import InvalidSubscription
from watcher.delivery.subscriptions import Subscription, SubscriptionNotFound
from watcher.logging import get_logger
from watcher.timing import iso_timestamp

log = get_logger(__name__)

router = APIRouter(tags=["subscriptions"])

Ctx = Annotated[ApiContext, Depends(get_context)]
SubscriptionId = Annotated[SubscriptionIdText, Path()]


def subscription_out(sub: Subscription) -> SubscriptionOut:
    return SubscriptionOut.model_validate(sub.to_public())


def _invalid(exc: InvalidSubscription) -> ApiError:
    message = str(exc).removeprefix(f"{exc.field}: ")
    return invalid(f"body.{exc.field}", message)


def owned_subscription(ctx: ApiContext, caller: Principal, subscription_id: str) -> Subscription:
    """The subscription if the caller may see it; another app's is as unknown as none."""
    try:
        sub = ctx.runtime.subscriptions.get(subscription_id)
    except SubscriptionNotFound:
        sub = None
    if sub is None or not caller.owns(sub.app):
        raise not_found(f"no subscription with id {subscription_id!r}")
    return sub


def _settled(ctx: ApiContext, sub: Subscription) -> Subscription:
    """Disabled again if the caller's app was deleted while this request ran."""
    rt = ctx.runtime
    return settle_for_app(rt.tenants, rt.subscriptions, sub, rt.clock())


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=SubscriptionWithSecret,
    summary="Subscribe a URL to payment events",
    description=(
        "Answers with the subscription **and its signing secret**, which is shown only here "
        "(and by rotate-secret): store it now. Webhooks are signed per Standard Webhooks."
    ),
    responses=error_responses(400, 401, 413, 422, 500, 503),
)
def create_subscription(
    body: SubscriptionCreate, ctx: Ctx, caller: Caller, audit: Audit
) -> SubscriptionWithSecret:
    filters = body.filters
    try:
        sub, secret = ctx.runtime.subscriptions.create(
            url=body.url,
            event_types=body.event_types,
            wallet_id=filters.wallet_id if filters else None,
            metadata_filter=filters.metadata if filters else None,
            description=body.description,
            enabled=body.enabled,
            owner=caller.owner,
        )
    except InvalidSubscription as exc:
        raise _invalid(exc) from None
    sub = _settled(ctx, sub)
    log.info("subscription created", subscription_id=sub.id, event_types=sub.event_types)
    audit.record(AuditAction.SUBSCRIPTION_CREATED, sub.id, ", ".join(sub.event_types))
    return SubscriptionWithSecret.model_validate({**sub.to_public(), "secret": secret})


@router.get(
    "/subscriptions",
    response_model=SubscriptionPage,
    summary="List subscriptions, oldest first",
    responses=error_responses(401, 422, 500, 503),
)
def list_subscriptions(
    ctx: Ctx,
    caller: Caller,
    enabled: Annotated[QueryBool | None, Query(description="Only (not) enabled ones")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> SubscriptionPage:
    with cursor_checked():
        items, next_cursor = ctx.runtime.subscriptions.cursor_page(
            cursor=cursor,
            limit=limit,
            keep=lambda sub: caller.owns(sub.app) and (enabled is None or sub.enabled == enabled),
        )
    return SubscriptionPage(items=[subscription_out(s) for s in items], next_cursor=next_cursor)


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    summary="One subscription (without its secret)",
    responses=error_responses(401, 404, 422, 500, 503),
)
def get_subscription(subscription_id: SubscriptionId, ctx: Ctx, caller: Caller) -> SubscriptionOut:
    return subscription_out(owned_subscription(ctx, caller, subscription_id))


@router.patch(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    summary="Change a subscription",
    description=(
        "Only the fields given change. In `filters`, a given `wallet_id` or `metadata` "
        "replaces the old one and `null` clears it; `description: null` clears it. "
        "`enabled: true` re-enables a subscription that was disabled (and clears the reason)."
    ),
    responses=error_responses(400, 401, 404, 409, 413, 422, 500, 503),
)
def update_subscription(
    subscription_id: SubscriptionId,
    body: SubscriptionUpdate,
    ctx: Ctx,
    caller: Caller,
    audit: Audit,
) -> SubscriptionOut:
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if "url" in given:
        changes["url"] = body.url
    if "event_types" in given:
        changes["event_types"] = body.event_types
    if "description" in given:
        changes["description"] = body.description or ""
    if "enabled" in given:
        changes["enabled"] = body.enabled
    filters = body.filters
    if filters is not None:
        if "wallet_id" in filters.model_fields_set:
            changes["wallet_id"] = filters.wallet_id or ""
        if "metadata" in filters.model_fields_set:
            changes["metadata_filter"] = filters.metadata or {}
    current = owned_subscription(ctx, caller, subscription_id)
    if body.enabled and current.app and ctx.runtime.tenants.app_by_id(current.app) is None:
        raise ApiError(409, "conflict", "its app was deleted: it cannot be enabled again")
    try:
        sub = ctx.runtime.subscriptions.update(subscription_id, **changes)
    except SubscriptionNotFound:
        raise not_found(f"no subscription with id {subscription_id!r}") from None
    except InvalidSubscription as exc:
        raise _invalid(exc) from None
    sub = _settled(ctx, sub)
    log.info("subscription updated", subscription_id=sub.id, changed=sorted(changes))
    audit.record(AuditAction.SUBSCRIPTION_CHANGED, sub.id, ", ".join(sorted(changes)))
    return subscription_out(sub)


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a subscription",
    description="Pending deliveries to it are dead-lettered when their turn comes.",
    responses=error_responses(401, 404, 422, 500, 503),
)
def delete_subscription(
    subscription_id: SubscriptionId, ctx: Ctx, caller: Caller, audit: Audit
) -> Response:
    owned_subscription(ctx, caller, subscription_id)
    try:
        ctx.runtime.subscriptions.delete(subscription_id)
    except SubscriptionNotFound:
        raise not_found(f"no subscription with id {subscription_id!r}") from None
    log.info("subscription deleted", subscription_id=subscription_id)
    audit.record(AuditAction.SUBSCRIPTION_DELETED, subscription_id)
    return Response(status_code=204)


@router.post(
    "/subscriptions/{subscription_id}/rotate-secret",
    response_model=RotatedSecret,
    summary="Make a new signing secret; the old one keeps signing for the overlap window",
    responses=error_responses(401, 404, 422, 500, 503),
)
def rotate_secret(
    subscription_id: SubscriptionId, ctx: Ctx, caller: Caller, audit: Audit
) -> RotatedSecret:
    rt = ctx.runtime
    overlap = rt.settings.watcher_webhook_secret_overlap
    now = rt.clock()
    had_secrets = bool(owned_subscription(ctx, caller, subscription_id).active_secrets(now))
    try:
        sub, secret = rt.subscriptions.rotate_secret(subscription_id, overlap=overlap, now=now)
    except SubscriptionNotFound:
        raise not_found(f"no subscription with id {subscription_id!r}") from None
    log.info("subscription secret rotated", subscription_id=sub.id, overlap=overlap)
    audit.record(AuditAction.ROTATED, sub.id, f"overlap {overlap:g} s")
    expires = iso_timestamp(now + overlap) if had_secrets and overlap > 0 else None
    return RotatedSecret.model_validate(
        {**sub.to_public(), "secret": secret, "previous_secrets_expire_at": expires}
    )


@router.post(
    "/subscriptions/{subscription_id}/test",
    status_code=202,
    response_model=TestEventResult,
    summary="Send a `webhook.test` event to this subscription",
    description="Delivered, signed and retried like any event; follow it at /v1/deliveries.",
    responses=error_responses(401, 404, 409, 422, 500, 503),
)
def send_test_event(
    subscription_id: SubscriptionId,
    ctx: Ctx,
    caller: Caller,
    background: BackgroundTasks,
    audit: Audit,
) -> TestEventResult:
    rt = ctx.runtime
    sub = owned_subscription(ctx, caller, subscription_id)
    if not sub.enabled:
        raise ApiError(
            409,
            "subscription_disabled",
            f"subscription {subscription_id!r} is disabled "
            f"({sub.disabled_reason or 'no reason given'}); enable it first",
        )
    now = rt.clock()
    event = rt.deliveries.add_test_event(subscription_id, now=now, owner=sub.app)
    # Make the delivery now (so its id can be read at once); the outbox consumer finds it
    # already made. Sending it to the workers happens after the answer.
    made = rt.deliveries.fan_out(event, now)
    background.add_task(ctx.kick_quietly)
    log.info("test event queued", subscription_id=subscription_id, event_id=event.event_id)
    audit.record(AuditAction.TEST_SENT, subscription_id, event.event_id)
    return TestEventResult(
        event_id=event.event_id,
        subscription_id=subscription_id,
        delivery_id=made[0] if made else delivery_id_for(event.event_id, subscription_id),
    )


@router.post(
    "/subscriptions/{subscription_id}/recover",
    status_code=202,
    response_model=RecoverResult,
    responses={
        200: {"model": RecoverResult, "description": "A dry run: nothing sent"},
        **error_responses(400, 401, 404, 413, 422, 500, 503),
    },
    summary="Re-send this subscription's failed and dead deliveries created in a time range",
    description=(
        "Deliveries created in [since, until], optionally only some statuses and event types. "
        "With `dry_run: true` nothing is sent: the answer counts what would be, by status."
    ),
)
def recover(
    subscription_id: SubscriptionId,
    body: RecoverRequest,
    ctx: Ctx,
    caller: Caller,
    background: BackgroundTasks,
    audit: Audit,
    response: Response,
) -> RecoverResult:
    rt = ctx.runtime
    since, until = body.since.timestamp(), body.until.timestamp()
    if until < since:
        raise invalid("body.until", "must not be before `since`")
    owned_subscription(ctx, caller, subscription_id)
    selection = Selection(
        since, until, tuple(body.statuses or RECOVERABLE), tuple(body.event_types or ())
    )
    found = recover_deliveries(
        rt.deliveries, subscription_id, selection, rt.clock(), dry_run=body.dry_run
    )
    count = len(found.delivery_ids)
    result = RecoverResult(
        subscription_id=subscription_id,
        dry_run=body.dry_run,
        count=count,
        by_status={status: found.by_status[status] for status in RECOVERABLE},
        delivery_ids=found.delivery_ids,
    )
    if body.dry_run:
        response.status_code = 200  # nothing was accepted for sending
        return result
    if count:
        background.add_task(ctx.kick_quietly)
    log.info("deliveries recovered", subscription_id=subscription_id, count=count)
    window = f"{iso_timestamp(since)} to {iso_timestamp(until)}"
    audit.record(AuditAction.RECOVERED, subscription_id, f"{count} re-sent, {window}")
    return result
