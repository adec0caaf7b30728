"""Voltage's own webhooks, taken as a hint: verify, answer at once, re-read the payment.

Voltage signs `raw_body + b"." + timestamp` with HMAC-SHA256 keyed by the shared secret
(VOLTAGE_WEBHOOK_SECRET) and sends standard padded base64 in `x-voltage-signature`, the unix
seconds in `x-voltage-timestamp`. A webhook that is unsigned, forged or outside the tolerance
window is refused with 401 and changes nothing. A genuine one is still only a hint: nothing is
believed from its body except the payment id, which is re-read from Voltage (after the answer,
so Voltage gets its 2xx well within its 10 s). Duplicates are harmless: the detector emits a
transition once, and adopting a watched payment is a no-op. They are also cheap: a replay (same
`x-voltage-webhook-id`, or same body and timestamp) reads nothing, and a flood of hints costs at
most one read per payment per second (see ingress_guard).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from starlette.concurrency import run_in_threadpool

from watcher.api.context import ApiContext, get_context
from watcher.api.errors import ApiError, error_responses
from watcher.api.failure_log import log_failure
from watcher.api.ingress_guard import (
    fingerprints,
    load_bounded,
    replay_ttl,
    take_read,
)
from watcher.api.response_models import IngressResult
from watcher.engine.poller import poll_payment
from watcher.engine.watching import watch_existing
from watcher.ids import PAYMENT
from watcher.logging import bind, get_logger, unbind
from watcher.voltage.errors import VoltageError
from watcher.voltage.purpose import Purpose

HINT = Purpose.HINT

log = get_logger(__name__)

router = APIRouter(tags=["voltage ingress"])

Ctx = Annotated[ApiContext, Depends(get_context)]

INGRESS_ROUTE = "/voltage/webhooks"
HEADER_SIGNATURE = "x-voltage-signature"
HEADER_TIMESTAMP = "x-voltage-timestamp"
HEADER_WEBHOOK_ID = "x-voltage-webhook-id"
DEFAULT_TOLERANCE = 300
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class SignatureError(ValueError):
    """The webhook is not provably from Voltage; the message says why (never the secret)."""


def sign_voltage_webhook(secret: str, body: bytes, timestamp: str) -> str:
    """What Voltage puts in `x-voltage-signature` for this body and timestamp."""
    mac = hmac.new(secret.encode("utf-8"), body + b"." + timestamp.encode("ascii"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify_voltage_webhook(
    secret: str,
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Raise SignatureError unless `signature` is Voltage's for this body and a fresh time."""
    if not timestamp or not signature:
        raise SignatureError(f"unsigned: {HEADER_SIGNATURE} and {HEADER_TIMESTAMP} are required")
    stamp = timestamp.strip()
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureError(f"{HEADER_TIMESTAMP} is not unix seconds")
    if abs(now - int(stamp)) > tolerance:
        raise SignatureError(f"{HEADER_TIMESTAMP} is outside the {tolerance} s window")
    expected = sign_voltage_webhook(secret, body, stamp).encode("ascii")
    given = signature.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected, given):
        raise SignatureError("the signature does not match the body")


@dataclass(frozen=True)
class Hint:
    kind: str  # "receive" or "send"
    event: str | None
    payment_id: str


def parse_hint(body: bytes) -> Hint:
    """The payment id a (verified) webhook is about; ApiError 400 for an unusable payload."""
    payload = load_bounded(body)
    detail = payload.get("detail") if isinstance(payload, dict) else None
    data = detail.get("data") if isinstance(detail, dict) else None
    payment_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(payment_id, str) or not PAYMENT.matches(payment_id):
        raise ApiError(
            400,
            "invalid_payload",
            "expected {'type', 'detail': {'event', 'data': {'id', ...}}} with a payment id "
            f"({PAYMENT.description})",
        )
    payment_id = PAYMENT.check(payment_id)
    kind = payload.get("type")
    event = detail.get("event") if isinstance(detail, dict) else None
    return Hint(
        kind=kind if isinstance(kind, str) else "",
        event=event if isinstance(event, str) else None,
        payment_id=payment_id,
    )


def process_hint(ctx: ApiContext, hint: Hint, action: str) -> None:
    """Re-read the payment now: poll it if watched, adopt it if it is a new receive."""
    rt = ctx.runtime
    bind(payment_id=hint.payment_id)
    try:
        if action == "poll":
            outcome = poll_payment(
                rt.payments,
                rt.poll_voltage,
                rt.poll_policy,
                hint.payment_id,
                rt.clock(),
                purpose=HINT,
            )
            log.info("voltage webhook: payment re-read", outcome=outcome.outcome)
            if outcome.outcome == "final":
                ctx.kick_quietly()
        elif action == "watch":
            result = watch_existing(rt, hint.payment_id)
            log.info(
                "voltage webhook: payment adopted",
                created=result.created,
                status=result.record.status,
            )
            if result.created and result.record.is_final:
                ctx.kick_quietly()
    except VoltageError as exc:
        # Only a hint: the poll schedule (or the next webhook) catches up.
        log.warning("voltage webhook: re-read failed", error=str(exc))
    except Exception as exc:
        log_failure(log, "voltage webhook: processing failed", exc)
    finally:
        unbind("payment_id")


Action = Literal["poll", "watch", "none"]


def _decide(ctx: ApiContext, hint: Hint, names: list[str]) -> tuple[Action, str | None]:
    """What a verified hint may cost: a replay, or a hint in its payment's second, reads nothing."""
    rt = ctx.runtime
    if not rt.hints.first_sighting(names, replay_ttl(ctx.webhook_tolerance)):
        return "none", "replay: this webhook was already received"
    action, reason = _action_for(ctx, hint)
    if action != "none" and not take_read(rt, hint.payment_id, poll=action == "poll"):
        return "none", "re-read less than a second ago; polled again shortly"
    return action, reason


def _action_for(ctx: ApiContext, hint: Hint) -> tuple[Action, str | None]:
    record = ctx.runtime.payments.get(hint.payment_id)
    if record is not None:
        if record.is_watching:
            return "poll", None
        return "none", f"already {record.status}" if record.is_final else "no longer watched"
    if hint.kind == "receive":
        return "watch", None
    return "none", f"not watched, and only receives are adopted (type {hint.kind!r})"


@router.post(
    INGRESS_ROUTE,
    status_code=202,
    response_model=IngressResult,
    summary="Ingress for Voltage's own signed webhooks (no bearer token)",
    description=(
        "Enabled by VOLTAGE_WEBHOOK_SECRET (404 otherwise). Verifies `x-voltage-signature` "
        "and `x-voltage-timestamp`; a valid webhook makes the watcher re-read the payment "
        "from Voltage right away (or start watching a new receive). Unsigned, forged or "
        "stale webhooks are refused with 401 and change nothing. A replay (same "
        "`x-voltage-webhook-id`, or same body and timestamp) and a hint within a second of "
        "the payment's last re-read are answered 202 `ignored` and read nothing."
    ),
    responses=error_responses(400, 401, 404, 413, 500, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "enum": ["receive", "send"]},
                            "detail": {
                                "type": "object",
                                "properties": {
                                    "event": {"type": "string"},
                                    "data": {"type": "object"},
                                },
                            },
                        },
                    }
                }
            },
        }
    },
)
async def voltage_webhook(request: Request, ctx: Ctx, background: BackgroundTasks) -> IngressResult:
    secret = ctx.settings.voltage_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise ApiError(
            404,
            "ingress_disabled",
            "the Voltage webhook ingress is off: set VOLTAGE_WEBHOOK_SECRET to enable it",
        )
    body = await request.body()
    try:
        verify_voltage_webhook(
            secret.get_secret_value(),
            body,
            timestamp=request.headers.get(HEADER_TIMESTAMP),
            signature=request.headers.get(HEADER_SIGNATURE),
            now=ctx.runtime.clock(),
            tolerance=ctx.webhook_tolerance,
        )
    except SignatureError as exc:
        log.warning("voltage webhook refused", reason=str(exc))
        raise ApiError(401, "invalid_signature", f"webhook refused: {exc}") from None
    hint = parse_hint(body)
    webhook_id = request.headers.get(HEADER_WEBHOOK_ID)
    names = fingerprints(body, request.headers.get(HEADER_TIMESTAMP, "").strip(), webhook_id)
    action, reason = await run_in_threadpool(_decide, ctx, hint, names)
    log.info(
        "voltage webhook accepted",
        payment_id=hint.payment_id,
        kind=hint.kind,
        voltage_event=hint.event,
        webhook_id=webhook_id,
        action=action,
        reason=reason,
    )
    if action == "none":
        return IngressResult(
            status="ignored", payment_id=hint.payment_id, action="none", reason=reason
        )
    background.add_task(process_hint, ctx, hint, action)
    return IngressResult(status="accepted", payment_id=hint.payment_id, action=action)
