"""Poll one payment: read it from Voltage, let the detector decide, schedule the next read.

Nothing here raises for a Voltage problem: every failure becomes a later poll, so a worker
never dies on bad answers and a payment is never dropped.

An unchanged poll costs one Redis round trip besides the GET: its counters, latency, record
fields and next poll go out in one script (`PaymentStore.write_poll`), and a task reads its
chunk's records together (`get_many`, then `poll_record` each). The write holds only while
the record still has the version read, so a record read early never overwrites a newer one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from watcher.engine.record_fields import payment_fields
from watcher.engine.records import PaymentRecord, is_legal_move
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore, TransitionOutcome
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


class PollResult(StrEnum):
    UNCHANGED = "unchanged"
    MOVED = "moved"  # a status change that is not final yet
    FINAL = "final"  # this poll made the final move and emitted its event
    LOST_RACE = "lost_race"  # someone else moved it first
    ERROR = "error"
    NOT_FOUND = "not_found"
    STOPPED = "stopped"
    ILLEGAL = "illegal"  # Voltage went backwards: ignored and counted
    SKIPPED = "skipped"  # not watched any more


@dataclass(frozen=True)
class PollOutcome:
    payment_id: str
    outcome: PollResult
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
    return poll_record(
        store, voltage, policy, payment_id, store.get(payment_id), now,
        purpose=purpose, fallback=fallback,
    )  # fmt: skip


def poll_record(
    store: PaymentStore,
    voltage: PaymentReader,
    policy: PollPolicy,
    payment_id: str,
    record: PaymentRecord | None,
    now: float,
    *,
    purpose: Purpose | None = None,
    fallback: bool = False,
) -> PollOutcome:
    """`poll_payment` with the record already read (None: not stored)."""
    if record is None or not record.is_watching:
        store.forget_schedule(payment_id)
        return PollOutcome(payment_id, PollResult.SKIPPED, record.status if record else None)
    why = purpose or policy.purpose(record, now, fallback=fallback)
    with store.tally.collecting():
        started = time.monotonic()
        try:
            payment = voltage.get_payment(payment_id, purpose=why)
        except VoltageNotFound:
            store.observe_latency("poll", time.monotonic() - started)
            store.count("polls")  # an answer, like any other: "not there (yet)"
            return _on_not_found(store, policy, record, now)
        except VoltageError as exc:
            store.observe_latency("poll", time.monotonic() - started)
            return _on_error(store, policy, record, exc, now)
        store.observe_latency("poll", time.monotonic() - started)
        store.count("polls")
        return apply_observation(
            store, policy, record, payment, now, fallback=fallback, reported=why in _REPORTED
        )


# Reads made because something reported the payment final.
_REPORTED = frozenset({Purpose.CONFIRM, Purpose.HINT})


def _on_error(
    store: PaymentStore, policy: PollPolicy, record: PaymentRecord, exc: VoltageError, now: float
) -> PollOutcome:
    if isinstance(exc, VoltageAuthError):
        store.count("voltage_errors:auth")
        log.error(  # an expected answer: a traceback would only add noise
            "voltage rejected our credentials; every payment is affected",
            payment_id=record.id,
            status=exc.status,
            error_type=exc.type,
        )
        next_at = now + AUTH_ERROR_DELAY
    else:
        kind = "malformed" if isinstance(exc, VoltageMalformedResponse) else "transient"
        if not exc.retryable:
            kind = "invalid"
        store.count(f"voltage_errors:{kind}")
        log.warning("poll failed; backing off", payment_id=record.id, error=str(exc), kind=kind)
        record.error_streak += 1
        next_at = policy.after_error(record, now, exc.retry_after)
    # A record changed meanwhile is left to whoever changed it: it rescheduled it.
    store.write_poll(record.id, record.version, now=now, error=str(exc), next_poll_at=next_at)
    return PollOutcome(record.id, PollResult.ERROR, record.status)


def apply_observation(
    store: PaymentStore,
    policy: PollPolicy,
    record: PaymentRecord,
    payment: Payment,
    now: float,
    *,
    fallback: bool = False,
    reported: bool = False,
) -> PollOutcome:
    """The detector: compare what Voltage says with what we stored, exactly once."""
    for _ in range(_MAX_CAS_ATTEMPTS):
        if record.is_final:
            return PollOutcome(record.id, PollResult.LOST_RACE, record.status)
        if payment.status == record.status:
            fields = _changed_fields(record, payment)
            outcome = _write_unchanged(
                store, policy, record, now, fallback,
                result=PollResult.UNCHANGED, fields=fields, recheck=reported,
            )  # fmt: skip
        elif not is_legal_move(record.status, payment.status):
            error = _illegal_error(store, record, payment)
            outcome = _write_unchanged(
                store, policy, record, now, fallback, result=PollResult.ILLEGAL, error=error
            )
        else:
            outcome = _move(store, policy, record, payment, now, fallback)
        if outcome is not None:
            return outcome
        # stale: another worker changed the record; look again with its version.
        fresh = store.get(record.id)
        if fresh is None:
            return PollOutcome(record.id, PollResult.LOST_RACE, None)
        record = fresh
    return PollOutcome(record.id, PollResult.LOST_RACE, record.status)


def _write_unchanged(
    store: PaymentStore,
    policy: PollPolicy,
    record: PaymentRecord,
    now: float,
    fallback: bool,
    *,
    result: PollResult,
    fields: dict[str, str] | None = None,
    error: str | None = None,
    recheck: bool = False,
) -> PollOutcome | None:
    """The poll's one write when the status stays; None when the record changed meanwhile.
    `recheck`: the list (or a webhook) said final, the read did not (yet): look again soon."""
    reason = policy.stop_reason(record, now)
    next_at = None if reason else policy.next_poll(record, now, fallback=fallback)
    if next_at is not None and recheck:
        next_at = min(next_at, now + policy.recheck_after)
    written = store.write_poll(
        record.id, record.version, now=now, fields=fields, error=error, next_poll_at=next_at
    )
    if not written:
        return None
    if reason is not None:
        return _stop(store, record, reason, now)
    return PollOutcome(record.id, result, record.status)


def _illegal_error(store: PaymentStore, record: PaymentRecord, payment: Payment) -> str:
    store.count("transitions:illegal")
    log.error(
        "unexpected status change ignored",
        payment_id=record.id,
        stored=record.status,
        observed=payment.status,
    )
    return f"unexpected status change {record.status} -> {payment.status}"


def _move(
    store: PaymentStore,
    policy: PollPolicy,
    record: PaymentRecord,
    payment: Payment,
    now: float,
    fallback: bool,
) -> PollOutcome | None:
    """The compare-and-set; None when another worker changed the record first."""
    result = store.transition(record, payment, now=now)
    if result.outcome == TransitionOutcome.OK:
        log.info(
            "payment status changed",
            payment_id=record.id,
            previous_status=record.status,
            status=payment.status,
            event_id=result.event_id,
        )
        if payment.is_final:
            return PollOutcome(record.id, PollResult.FINAL, payment.status, result.event_id)
        fresh = store.get(record.id) or record
        reason = policy.stop_reason(fresh, now)
        if reason is not None:
            return _stop(store, fresh, reason, now)
        store.reschedule(record.id, policy.next_poll(fresh, now, fallback=fallback))
        return PollOutcome(record.id, PollResult.MOVED, fresh.status)
    if result.outcome in (TransitionOutcome.FINAL, TransitionOutcome.MISSING):
        return PollOutcome(record.id, PollResult.LOST_RACE, record.status)
    return None


def _stop(store: PaymentStore, record: PaymentRecord, reason: str, now: float) -> PollOutcome:
    store.stop(record.id, reason=reason, now=now)
    log.warning(
        "stopped watching a payment that never became final",
        payment_id=record.id,
        status=record.status,
        reason=reason,
    )
    return PollOutcome(record.id, PollResult.STOPPED, record.status)


def _on_not_found(
    store: PaymentStore, policy: PollPolicy, record: PaymentRecord, now: float
) -> PollOutcome:
    """Remember when Voltage first said 404, so the tolerance window has a start."""
    first_seen = record.not_found_since if record.not_found_since is not None else now
    expired = policy.not_found_expired(first_seen, record, now)
    next_at = None if expired else now + policy.generating_interval
    store.write_poll(
        record.id, record.version, now=now, not_found_since=first_seen, next_poll_at=next_at
    )
    if expired:
        store.stop(record.id, reason="not_found", now=now)
        log.error("voltage does not know this payment; stopped watching", payment_id=record.id)
        return PollOutcome(record.id, PollResult.STOPPED, record.status)
    return PollOutcome(record.id, PollResult.NOT_FOUND, record.status)


def _changed_fields(record: PaymentRecord, payment: Payment) -> dict[str, str]:
    """The record's mirror of Voltage's answer, unless the answer is the one stored already
    (most polls): then nothing of it is sent again."""
    if payment.raw == record.raw and (record.payment_hash or not record.payment_request):
        return {}
    return payment_fields(payment, decoded_request=_decoded(record))


def _decoded(record: PaymentRecord) -> str | None:
    """The BOLT11 whose decoded fields the record holds (its hash is only stored by decoding)."""
    return record.payment_request if record.payment_hash else None
