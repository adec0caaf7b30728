"""Poll one payment: read it from Voltage, let the detector decide, schedule the next read.

Nothing here raises for a Voltage problem: every failure becomes a later poll, so a worker
never dies on bad answers and a payment is never dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from watcher.engine.records import PaymentRecord, is_legal_move
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore, payment_fields
from watcher.logging import get_logger
from watcher.voltage.errors import (
    VoltageAuthError,
    VoltageError,
    VoltageMalformedResponse,
    VoltageNotFound,
)
from watcher.voltage.models import Payment
from watcher.voltage.purpose import Purpose

log = get_logger(__name__)

# Credential problems hit every payment at once; re-check slowly instead of hammering.
AUTH_ERROR_DELAY = 60.0
_MAX_CAS_ATTEMPTS = 5


class PaymentReader(Protocol):
    def get_payment(self, payment_id: str, *, purpose: Purpose = ...) -> Payment: ...


@dataclass(frozen=True)
class PollOutcome:
    """What one poll did: `unchanged`, `moved`, `final`, `lost_race`, `error`, `not_found`,
    `stopped`, `illegal`, or `skipped` (not watched any more)."""

    payment_id: str
    outcome: str
    status: str | None = None
    event_id: str | None = None


def poll_payment(
    store: PaymentStore,
    voltage: PaymentReader,
    policy: PollPolicy,
    payment_id: str,
    now: float,
    *,
    purpose: Purpose | None = None,
    fallback: bool = False,
) -> PollOutcome:
    """Read one payment and apply what it says. `purpose` None means the schedule asked (the
    policy says why); a sweep's report is `CONFIRM`, a Voltage webhook `HINT`. A report that a
    read does not bear out is read again soon rather than at the sparse cadence."""
    record = store.get(payment_id)
    if record is None or not record.is_watching:
        store.forget_schedule(payment_id)
        return PollOutcome(payment_id, "skipped", record.status if record else None)

    why = purpose or policy.purpose(record, now, fallback=fallback)
    started = time.monotonic()
    try:
        payment = voltage.get_payment(payment_id, purpose=why)
    except VoltageNotFound:
        store.observe_latency("poll", time.monotonic() - started)
        store.count("polls")  # an answer, like any other: "not there (yet)"
        return _on_not_found(store, policy, record, now)
    except VoltageAuthError as exc:
        store.observe_latency("poll", time.monotonic() - started)
        store.count("voltage_errors:auth")
        log.error(  # noqa: TRY400 - an expected answer, a traceback would only add noise
            "voltage rejected our credentials; every payment is affected",
            payment_id=payment_id,
            status=exc.status,
            error_type=exc.type,
        )
        store.record_poll(payment_id, now=now, error=str(exc))
        store.reschedule(payment_id, now + AUTH_ERROR_DELAY)
        return PollOutcome(payment_id, "error", record.status)
    except VoltageError as exc:
        store.observe_latency("poll", time.monotonic() - started)
        kind = "malformed" if isinstance(exc, VoltageMalformedResponse) else "transient"
        if not exc.retryable:
            kind = "invalid"
        store.count(f"voltage_errors:{kind}")
        log.warning("poll failed; backing off", payment_id=payment_id, error=str(exc), kind=kind)
        store.record_poll(payment_id, now=now, error=str(exc))
        record.error_streak += 1
        store.reschedule(payment_id, policy.after_error(record, now, exc.retry_after))
        return PollOutcome(payment_id, "error", record.status)

    store.observe_latency("poll", time.monotonic() - started)
    store.count("polls")
    outcome = apply_observation(store, policy, record, payment, now, fallback=fallback)
    if why in _REPORTED and outcome.outcome == "unchanged":
        # The list (or a webhook) said final, the read did not (yet): look again soon.
        store.reschedule(payment_id, now + policy.recheck_after, only_earlier=True)
    return outcome


# Reads made because something reported the payment final.
_REPORTED = frozenset({Purpose.CONFIRM, Purpose.HINT})


def apply_observation(
    store: PaymentStore,
    policy: PollPolicy,
    record: PaymentRecord,
    payment: Payment,
    now: float,
    *,
    fallback: bool = False,
) -> PollOutcome:
    """The detector: compare what Voltage says with what we stored, exactly once."""
    for _ in range(_MAX_CAS_ATTEMPTS):
        if record.is_final:
            return PollOutcome(record.id, "lost_race", record.status)
        if payment.status == record.status:
            fields = payment_fields(payment, decoded_request=_decoded(record))
            store.record_poll(record.id, now=now, fields=fields)
            return _schedule_next(store, policy, record, now, "unchanged", fallback)
        if not is_legal_move(record.status, payment.status):
            store.count("transitions:illegal")
            log.error(
                "unexpected status change ignored",
                payment_id=record.id,
                stored=record.status,
                observed=payment.status,
            )
            store.record_poll(
                record.id,
                now=now,
                error=f"unexpected status change {record.status} -> {payment.status}",
            )
            return _schedule_next(store, policy, record, now, "illegal", fallback)
        result = store.transition(record, payment, now=now)
        if result.outcome == "ok":
            log.info(
                "payment status changed",
                payment_id=record.id,
                previous_status=record.status,
                status=payment.status,
                event_id=result.event_id,
            )
            if payment.is_final:
                return PollOutcome(record.id, "final", payment.status, result.event_id)
            fresh = store.get(record.id)
            return _schedule_next(store, policy, fresh or record, now, "moved", fallback)
        if result.outcome in ("final", "missing"):
            return PollOutcome(record.id, "lost_race", record.status)
        # stale: another worker changed the record; look again with its version.
        fresh = store.get(record.id)
        if fresh is None:
            return PollOutcome(record.id, "lost_race", None)
        record = fresh
    return PollOutcome(record.id, "lost_race", record.status)


def _schedule_next(
    store: PaymentStore,
    policy: PollPolicy,
    record: PaymentRecord,
    now: float,
    outcome: str,
    fallback: bool,
) -> PollOutcome:
    reason = policy.stop_reason(record, now)
    if reason is not None:
        store.stop(record.id, reason=reason, now=now)
        log.warning(
            "stopped watching a payment that never became final",
            payment_id=record.id,
            status=record.status,
            reason=reason,
        )
        return PollOutcome(record.id, "stopped", record.status)
    store.reschedule(record.id, policy.next_poll(record, now, fallback=fallback))
    return PollOutcome(record.id, outcome, record.status)


def _on_not_found(
    store: PaymentStore, policy: PollPolicy, record: PaymentRecord, now: float
) -> PollOutcome:
    first_seen = store.mark_not_found(record.id, now=now, since=record.not_found_since)
    if policy.not_found_expired(first_seen, record, now):
        store.stop(record.id, reason="not_found", now=now)
        log.error("voltage does not know this payment; stopped watching", payment_id=record.id)
        return PollOutcome(record.id, "stopped", record.status)
    store.reschedule(record.id, now + policy.generating_interval)
    return PollOutcome(record.id, "not_found", record.status)


def _decoded(record: PaymentRecord) -> str | None:
    """The BOLT11 whose decoded fields the record holds (its hash is only stored by decoding)."""
    return record.payment_request if record.payment_hash else None
