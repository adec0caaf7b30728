"""Attempt one delivery and decide what happens next: done, retry later, dead, or disable."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import requests

from watcher import __version__
from watcher.delivery.sender import AttemptResult, post_webhook
from watcher.delivery.signing import webhook_headers
from watcher.delivery.store import DEAD, FAILED, FINISHED, SUCCEEDED, Delivery, DeliveryStore
from watcher.delivery.subscriptions import Subscription, SubscriptionNotFound
from watcher.engine.records import iso_timestamp
from watcher.logging import bind, get_logger, unbind
from watcher.settings import Settings

log = get_logger(__name__)

USER_AGENT = f"voltage-watcher/{__version__}"
# Dead-lettered without an attempt (subscription disabled or deleted, event gone).
DROPPED = "dropped"
# No free slot for this subscriber: look again this soon, without counting an attempt.
SLOT_WAIT = 0.5
# Outcomes that say the subscriber is in trouble (or busy): the rest of its chunk goes back.
_STOP_CHUNK = frozenset({FAILED, DEAD, "postponed"})


@dataclass(frozen=True)
class DeliveryPolicy:
    retry_schedule: tuple[float, ...]
    connect_timeout: float
    timeout: float
    max_in_flight: int
    retry_after_max: float
    disable_after: float
    lease: float
    jitter: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            retry_schedule=tuple(settings.watcher_webhook_retry_schedule),
            connect_timeout=settings.watcher_webhook_connect_timeout,
            timeout=settings.watcher_webhook_timeout,
            max_in_flight=settings.watcher_webhook_max_in_flight,
            retry_after_max=settings.watcher_webhook_retry_after_max,
            disable_after=settings.watcher_webhook_disable_after,
            lease=settings.watcher_delivery_lease,
        )

    def next_attempt_at(
        self, attempts_made: int, now: float, retry_after: float | None
    ) -> float | None:
        """When to try again after `attempts_made` failures, or None when out of attempts."""
        if attempts_made >= len(self.retry_schedule):
            return None
        delay = self.retry_schedule[attempts_made]
        delay *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return now + delay


@dataclass(frozen=True)
class Chunk:
    """Deliveries of one subscriber, attempted in order by one thread."""

    subscription_id: str
    delivery_ids: list[str]


def group_by_subscription(
    deliveries: DeliveryStore, delivery_ids: list[str], chunk_size: int
) -> list[Chunk]:
    """Chunks of deliveries that share one subscriber, so a chunk never makes one subscriber
    wait behind another (one Celery message per delivery cost 4x the CPU of the POST)."""
    pipe = deliveries.redis.pipeline(transaction=False)
    for delivery_id in delivery_ids:
        pipe.hget(deliveries.keys.delivery(delivery_id), "subscription_id")
    groups: dict[str, list[str]] = {}
    for delivery_id, sub_id in zip(delivery_ids, pipe.execute(), strict=True):
        groups.setdefault(str(sub_id or ""), []).append(delivery_id)
    return [
        Chunk(sub_id, ids[start : start + chunk_size])
        for sub_id, ids in groups.items()
        for start in range(0, len(ids), chunk_size)
    ]


def attempt_chunk(
    deliveries: DeliveryStore,
    session: requests.Session,
    policy: DeliveryPolicy,
    delivery_ids: list[str],
    clock: Callable[[], float],
) -> list[str]:
    """Attempt one subscriber's deliveries in order. When the subscriber fails (or has no
    free slot), the rest go straight back to their schedules instead of queueing behind a
    slow endpoint; each then comes due again on its own."""
    outcomes: list[str] = []
    started = clock()
    longest_attempt = policy.connect_timeout + policy.timeout
    for index, delivery_id in enumerate(delivery_ids):
        if clock() - started + longest_attempt >= policy.lease:
            # The claim would run out mid-attempt and the delivery would be sent twice.
            deliveries.release_claims(delivery_ids[index:], clock())
            break
        bind(delivery_id=delivery_id)
        try:
            outcome = attempt_delivery(deliveries, session, policy, delivery_id, clock())
        finally:
            unbind("delivery_id")
        outcomes.append(outcome)
        rest = delivery_ids[index + 1 :]
        if outcome in _STOP_CHUNK and rest:
            delay = SLOT_WAIT if outcome == "postponed" else 0.0
            deliveries.release_claims(rest, clock() + delay)
            break
    return outcomes


def attempt_delivery(
    deliveries: DeliveryStore,
    session: requests.Session,
    policy: DeliveryPolicy,
    delivery_id: str,
    now: float,
) -> str:
    """Returns what happened: succeeded, failed (retry scheduled), dead (out of attempts or
    410), dropped (dead without an attempt), postponed (no free slot) or skipped."""
    delivery = deliveries.get(delivery_id)
    keys = deliveries.keys
    if delivery is None or delivery.status in FINISHED:
        deliveries.redis.zrem(keys.deliver_schedule, delivery_id)
        deliveries.redis.zrem(keys.retry_schedule, delivery_id)
        return "skipped"
    try:
        sub = deliveries.subscriptions.get(delivery.subscription_id)
    except SubscriptionNotFound:
        deliveries.finish_without_attempt(delivery, reason="subscription deleted", now=now)
        return DROPPED
    if not sub.enabled:
        reason = f"subscription disabled: {sub.disabled_reason or 'no reason given'}"
        deliveries.finish_without_attempt(delivery, reason=reason, now=now)
        return DROPPED
    if not deliveries.acquire_slot(sub.id, delivery.id, now, policy.lease, policy.max_in_flight):
        schedule = keys.retry_schedule if delivery.attempts else keys.deliver_schedule
        deliveries.postpone(delivery, schedule, now + SLOT_WAIT)
        return "postponed"
    try:
        return _attempt(deliveries, session, policy, delivery, sub, now)
    finally:
        deliveries.release_slot(sub.id, delivery.id)


def _attempt(
    deliveries: DeliveryStore,
    session: requests.Session,
    policy: DeliveryPolicy,
    delivery: Delivery,
    sub: Subscription,
    now: float,
) -> str:
    event = deliveries.event(delivery.outbox_entry)
    if event is None:
        deliveries.finish_without_attempt(delivery, reason="event no longer stored", now=now)
        return DROPPED
    body = event.body.encode()
    headers = webhook_headers(
        msg_id=event.event_id,
        timestamp=int(now),
        body=body,
        secrets=sub.active_secrets(now),
        user_agent=USER_AGENT,
    )
    result = post_webhook(
        session,
        sub.url,
        body,
        headers,
        connect_timeout=policy.connect_timeout,
        timeout=policy.timeout,
    )
    attempt = _attempt_entry(delivery, result, now)
    if result.succeeded:
        deliveries.record_attempt(
            delivery, attempt, status=SUCCEEDED, now=now, next_attempt_at=None
        )
        deliveries.subscriptions.note_success(sub.id)
        log.info("webhook delivered", **_log_fields(delivery, result))
        return SUCCEEDED
    if result.status_code == 410:
        deliveries.record_attempt(delivery, attempt, status=DEAD, now=now, next_attempt_at=None)
        deliveries.subscriptions.disable(sub.id, "the endpoint answered 410 Gone", now=now)
        log.warning(
            "subscriber said 410 Gone; subscription disabled", **_log_fields(delivery, result)
        )
        return DEAD
    made = delivery.attempts + 1 - delivery.attempts_before_resend
    next_at = policy.next_attempt_at(made, now, result.retry_after)
    status = FAILED if next_at is not None else DEAD
    deliveries.record_attempt(delivery, attempt, status=status, now=now, next_attempt_at=next_at)
    log.warning(
        "webhook attempt failed",
        next_attempt_at=iso_timestamp(next_at) if next_at else None,
        dead=next_at is None,
        **_log_fields(delivery, result),
    )
    failing_since = deliveries.subscriptions.note_failure(sub.id, now)
    if now - failing_since >= policy.disable_after:
        reason = (
            f"failing without a success since {iso_timestamp(failing_since)}; "
            f"last error: {attempt['error'] or attempt['status_code']}"
        )
        deliveries.subscriptions.disable(sub.id, reason, now=now)
        log.error(
            "subscription disabled after failing for too long",
            subscription_id=sub.id,
            reason=reason,
        )
    return status


def _attempt_entry(delivery: Delivery, result: AttemptResult, now: float) -> dict[str, object]:
    return {
        "attempt": delivery.attempts + 1,
        "at": iso_timestamp(now),
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "response_body": result.response_excerpt,
        "error": result.error,
        "refused_by_ssrf_guard": result.refused,
    }


def _log_fields(delivery: Delivery, result: AttemptResult) -> dict[str, object]:
    fields: dict[str, object] = {
        "delivery_id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "event_id": delivery.event_id,
        "payment_id": delivery.payment_id,
        "attempt": delivery.attempts + 1,
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
    }
    if result.error is not None:  # not `error=None` on every success
        fields["error"] = result.error
    return fields
