"""Payments: create a receive and watch it, adopt one made elsewhere, see what we know."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Response

from watcher.access.audit import AuditAction
from watcher.api.auth import Caller
from watcher.api.context import ApiContext, get_context
from watcher.api.dependency_errors import voltage_error
from watcher.api.errors import ApiError, error_responses, invalid, not_found
from watcher.api.field_types import PaymentIdText, PaymentStatusName, QueryBool
from watcher.api.pagination import cursor_checked
from watcher.api.request_models import PaymentCreate, WatchRequest
from watcher.api.response_models import PaymentDetail, PaymentOut, PaymentPage, Transition
from watcher.api.routes_audit import Audit
from watcher.engine.records import PaymentRecord, transition_out
from watcher.engine.watching import ForeignPayment, create_and_watch, watch_existing
from watcher.logging import get_logger
from watcher.timing import iso_timestamp
from watcher.voltage.errors import VoltageError

log = get_logger(__name__)

router = APIRouter(tags=["payments"])

Ctx = Annotated[ApiContext, Depends(get_context)]
PaymentId = Annotated[PaymentIdText, Path()]

_CREATE_DOC = """Create a receive on Voltage and watch it until it completes, fails or expires.

- **201**: created; the body carries the BOLT11 `payment_request`.
- **202**: created, but Voltage has not produced the invoice yet (`payment_request` is null);
  the watch goes on: read `GET /v1/payments/{id}` in a moment.
- **200**: a repeat of an earlier create with the same `client_id`: the same payment, no second
  invoice (202 instead while its invoice is still not known).
"""


def payment_out(record: PaymentRecord) -> PaymentOut:
    return PaymentOut.model_validate(record.to_public())


@router.post(
    "/payments",
    status_code=201,
    response_model=PaymentOut,
    summary="Create a payment (BOLT11 receive) and watch it",
    description=_CREATE_DOC,
    responses={
        200: {"model": PaymentOut, "description": "The same payment as an earlier create"},
        202: {"model": PaymentOut, "description": "Created; the invoice is not ready yet"},
        **error_responses(400, 401, 409, 413, 422, 500, 502, 503),
    },
)
def create_payment(
    body: PaymentCreate,
    ctx: Ctx,
    caller: Caller,
    response: Response,
    background: BackgroundTasks,
    audit: Audit,
) -> PaymentOut:
    rt = ctx.runtime
    if body.wallet_id is None and not rt.settings.voltage_wallet_id:
        raise invalid("body.wallet_id", "required: VOLTAGE_WALLET_ID is not set")
    try:
        result = create_and_watch(
            rt,
            amount_msats=body.amount_msats,
            description=body.description,
            expiration=body.expiration,
            metadata=body.metadata,
            wallet_id=body.wallet_id,
            client_id=body.client_id,
            invoice_wait=ctx.invoice_wait,
            owner=caller.owner,
        )
    except VoltageError as exc:
        log.warning("create failed at Voltage", error=str(exc), error_class=type(exc).__name__)
        raise voltage_error(exc) from None
    except ForeignPayment:  # client ids are each app's own: only a hash collision
        raise ApiError(409, "conflict", "this client_id is taken; choose another") from None
    record = result.record
    if result.created and record.is_final:
        background.add_task(ctx.kick_quietly)
    if not result.invoice_ready:
        response.status_code = 202
    elif not result.created:
        response.status_code = 200
    log.info(
        "payment created via the API",
        payment_id=record.id,
        created=result.created,
        invoice_ready=result.invoice_ready,
        status=record.status,
    )
    if result.created:
        amount = "any amount" if body.amount_msats is None else f"{body.amount_msats} msats"
        audit.record(AuditAction.PAYMENT_CREATED, record.id, amount)
    return payment_out(record)


@router.get(
    "/payments",
    response_model=PaymentPage,
    summary="List watched payments, newest first",
    responses=error_responses(401, 422, 500, 503),
)
def list_payments(
    ctx: Ctx,
    caller: Caller,
    status: Annotated[PaymentStatusName | None, Query(description="Only this status")] = None,
    watching: Annotated[
        QueryBool | None, Query(description="Only payments still (not) being polled")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> PaymentPage:

    def keep(record: PaymentRecord) -> bool:
        if not caller.owns(record.app):
            return False
        if status is not None and record.status != status:
            return False
        return watching is None or record.is_watching == watching

    with cursor_checked():
        items, next_cursor = ctx.runtime.payments.history.page(
            cursor=cursor, limit=limit, keep=keep
        )
    return PaymentPage(items=[payment_out(r) for r in items], next_cursor=next_cursor)


@router.get(
    "/payments/{payment_id}",
    response_model=PaymentDetail,
    summary="One payment: status, transitions, last poll, last error",
    responses=error_responses(401, 404, 422, 500, 503),
)
def get_payment(payment_id: PaymentId, ctx: Ctx, caller: Caller) -> PaymentDetail:
    store = ctx.runtime.payments
    record = store.get(payment_id)
    if record is None or not caller.owns(record.app):
        raise not_found(f"the watcher does not watch a payment with id {payment_id!r}")
    transitions = [
        Transition.model_validate(transition_out(t)) for t in store.transitions(payment_id)
    ]
    next_poll = store.next_poll_at(payment_id)
    data: dict[str, Any] = record.to_public()
    return PaymentDetail.model_validate(
        {
            **data,
            "transitions": transitions,
            "next_poll_at": iso_timestamp(next_poll) if next_poll is not None else None,
        }
    )


@router.post(
    "/watches",
    status_code=201,
    response_model=PaymentOut,
    summary="Watch a payment created elsewhere",
    description=(
        "Adopt a Voltage payment by id. **201** when the watch begins, **200** when it was "
        "already watched (nothing changes). A payment that is already final gets its event "
        "at once."
    ),
    responses={
        200: {"model": PaymentOut, "description": "Already watched"},
        **error_responses(400, 401, 404, 413, 422, 500, 502, 503),
    },
)
def create_watch(
    body: WatchRequest,
    ctx: Ctx,
    caller: Caller,
    response: Response,
    background: BackgroundTasks,
    audit: Audit,
) -> PaymentOut:
    rt = ctx.runtime
    payment_id = str(body.payment_id)  # canonical: lower-case, as Voltage answers
    unknown = f"Voltage has no payment with id {payment_id!r} in this environment"
    try:
        result = watch_existing(rt, payment_id, caller.owner)
    except VoltageError as exc:
        raise voltage_error(exc, not_found_detail=unknown) from None
    except ForeignPayment:  # another app's: as if it did not exist
        raise not_found(unknown) from None
    if not result.created:
        response.status_code = 200
    elif result.record.is_final:
        background.add_task(ctx.kick_quietly)
    log.info("watch requested via the API", payment_id=payment_id, created=result.created)
    if result.created:
        audit.record(AuditAction.PAYMENT_WATCHED, payment_id)
    return payment_out(result.record)
