"""Attempt one delivery and decide what happens next: done, retry later, dead, or disable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import requests

from watcher import __version__
from watcher.delivery import notices
from watcher.delivery.attempt_store import Begin, Begun, Health, SlotTerms, Then
from watcher.delivery.sender import AttemptResult, post_webhook
from watcher.delivery.signing import webhook_headers
from watcher.delivery.store import Delivery, DeliveryStatus, DeliveryStore, OutboxEvent
from watcher.delivery.subscriptions import Subscription
from watcher.logging import bind, get_logger, unbind
from watcher.settings import Settings
from watcher.timing import iso_timestamp, jittered

log = get_logger(__name__)

USER_AGENT = f"voltage-watcher/{__version__}"
# No free slot for this subscriber: look again this soon, without counting an attempt.
SLOT_WAIT = 0.5


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a retry is scheduled
    DEAD = "dead"  # out of attempts, or 410
    DROPPED = "dropped"  # dead-lettered without an attempt (subscription or event gone)
    POSTPONED = "postponed"  # no free slot
    SKIPPED = "skipped"  # missing or finished already


DROPPED = AttemptOutcome.DROPPED
# Outcomes that say the subscriber is in trouble (or busy): the rest of its chunk goes back.
_STOP_CHUNK = frozenset({AttemptOutcome.FAILED, AttemptOutcome.DEAD, AttemptOutcome.POSTPONED})


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

    @property
    def slot(self) -> SlotTerms:
        return SlotTerms(lease=self.lease, cap=self.max_in_flight, postpone=SLOT_WAIT)

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
        delay = jittered(delay, self.jitter)
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
    owners = deliveries.subscription_ids(delivery_ids)
    groups: dict[str, list[str]] = {}
    for delivery_id, sub_id in zip(delivery_ids, owners, strict=True):
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
) -> list[AttemptOutcome]:
    """Attempt one subscriber's deliveries in order, the write after each success beginning
    the next. When the subscriber fails (or has no free slot), the rest go straight back to
    their schedules instead of queueing behind a slow endpoint; each then comes due again on
    its own."""
    outcomes: list[AttemptOutcome] = []
    deadline = clock() + policy.lease - (policy.connect_timeout + policy.timeout)
    begun: tuple[Begun, float] | None = None
    for index, delivery_id in enumerate(delivery_ids):
        if begun is None and clock() >= deadline:
            # The claim would run out mid-attempt and the delivery would be sent twice.
            deliveries.release_claims(delivery_ids[index:], clock())
            break
        rest = delivery_ids[index + 1 :]
        next_up = Next(rest[0], deadline, clock) if rest else None
        bind(delivery_id=delivery_id)
        try:
            if begun is None:
                now = clock()
                begun = deliveries.attempts.begin(delivery_id, now, policy.slot), now
            outcome, begun = attempt_begun(deliveries, session, policy, *begun, next_up)
        finally:
            unbind("delivery_id")
        outcomes.append(outcome)
        if outcome in _STOP_CHUNK and rest:
            delay = SLOT_WAIT if outcome == AttemptOutcome.POSTPONED else 0.0
            deliveries.release_claims(rest, clock() + delay)
            break
    return outcomes


def ran_clean(delivery_ids: list[str], outcomes: list[AttemptOutcome]) -> bool:
    """Every delivery of the chunk was attempted and none said the subscriber is in trouble:
    its thread may take more."""
    return len(outcomes) == len(delivery_ids) and not _STOP_CHUNK.intersection(outcomes)


def attempt_delivery(
    deliveries: DeliveryStore,
    session: requests.Session,
    policy: DeliveryPolicy,
    delivery_id: str,
    now: float,
) -> AttemptOutcome:
    """One attempt in two Redis round trips: the read that takes a slot, the POST, the write
    that records it and gives the slot back."""
    begun = deliveries.attempts.begin(delivery_id, now, policy.slot)
    return attempt_begun(deliveries, session, policy, begun, now, None)[0]


@dataclass(frozen=True)
class Next:
    """A chunk's next delivery, begun by the write after a success if that write comes
    before `deadline`: decided after the POST, which may have taken its whole timeout."""

    delivery_id: str
    deadline: float
    clock: Callable[[], float]

    def then(self, slot: SlotTerms) -> Then | None:
        now = self.clock()
        return Then(self.delivery_id, now, slot) if now < self.deadline else None


def attempt_begun(
    deliveries: DeliveryStore,
    session: requests.Session,
    policy: DeliveryPolicy,
    begun: Begun,
    now: float,
    next_up: Next | None,
) -> tuple[AttemptOutcome, tuple[Begun, float] | None]:
    """The attempt of a begun delivery; after a success, `next_up` is begun by the same
    write, and comes back with the time it was begun at."""
    delivery, sub, event = begun.delivery, begun.subscription, begun.event
    if begun.outcome in (Begin.SKIPPED, Begin.POSTPONED) or delivery is None:
        return AttemptOutcome(begun.outcome.value), None
    if begun.outcome is Begin.DROP or sub is None or event is None:
        if sub is None:
            reason = "subscription deleted"
        elif not sub.enabled:
            reason = f"subscription disabled: {sub.disabled_reason or 'no reason given'}"
        else:
            reason = "event no longer stored"
        deliveries.finish_without_attempt(delivery, reason=reason, now=now)
        return DROPPED, None
    then: Then | None = None
    try:
        result = _post(session, policy, sub, event, now)
        if next_up is not None and result.succeeded:
            then = next_up.then(policy.slot)
        outcome, next_begun = _record(deliveries, policy, delivery, sub, result, now, then)
    except BaseException:
        # The write that gives the slots back may not have run (or not all of it).
        deliveries.release_slot(sub.id, delivery.id)
        if then is not None:
            deliveries.release_slot(sub.id, then.delivery_id)
        raise
    return outcome, (next_begun, then.now) if then is not None and next_begun else None


def _post(
    session: requests.Session,
    policy: DeliveryPolicy,
    sub: Subscription,
    event: OutboxEvent,
    now: float,
) -> AttemptResult:
    body = event.body.encode()
    headers = webhook_headers(
        msg_id=event.event_id,
        timestamp=int(now),
        body=body,
        secrets=sub.active_secrets(now),
        user_agent=USER_AGENT,
    )
    return post_webhook(
        session,
        sub.url,
        body,
        headers,
        connect_timeout=policy.connect_timeout,
        timeout=policy.timeout,
    )


def _record(
    deliveries: DeliveryStore,
    policy: DeliveryPolicy,
    delivery: Delivery,
    sub: Subscription,
    result: AttemptResult,
    now: float,
    then: Then | None,
) -> tuple[AttemptOutcome, Begun | None]:
    """Write what the answer means, and say it in the log."""
    attempt = _attempt_entry(delivery, result, now)

    def record(status: DeliveryStatus, next_at: float | None, health: Health) -> float:
        return deliveries.attempts.finish(
            delivery, attempt, status=status, now=now, next_attempt_at=next_at, health=health
        )[0]

    if result.succeeded:
        had_failed_since, next_begun = deliveries.attempts.finish(
            delivery, attempt, status=DeliveryStatus.SUCCEEDED, now=now, next_attempt_at=None,
            health="success", then=then,
        )  # fmt: skip
        log.info("webhook delivered", **_log_fields(delivery, result))
        if had_failed_since < now:
            notices.subscription_recovered(deliveries, sub, delivery, had_failed_since, now)
        return AttemptOutcome.SUCCEEDED, next_begun
    if result.status_code == 410:
        record(DeliveryStatus.DEAD, None, "")
        reason = "the endpoint answered 410 Gone"
        deliveries.subscriptions.disable(sub.id, reason, now=now)
        log.warning(
            "subscriber said 410 Gone; subscription disabled", **_log_fields(delivery, result)
        )
        notices.delivery_dead(deliveries, delivery, attempt, now)
        notices.subscription_disabled(deliveries, sub, reason, now)
        return AttemptOutcome.DEAD, None
    made = delivery.attempts + 1 - delivery.attempts_before_resend
    next_at = policy.next_attempt_at(made, now, result.retry_after)
    status = DeliveryStatus.FAILED if next_at is not None else DeliveryStatus.DEAD
    failing_since = record(status, next_at, "failure")
    log.warning(
        "webhook attempt failed",
        next_attempt_at=iso_timestamp(next_at) if next_at else None,
        dead=next_at is None,
        **_log_fields(delivery, result),
    )
    if next_at is None:
        notices.delivery_dead(deliveries, delivery, attempt, now)
    if now - failing_since >= policy.disable_after:
        _disable_failing(deliveries, sub, failing_since, attempt, now)
    return AttemptOutcome(status.value), None


def _disable_failing(
    deliveries: DeliveryStore,
    sub: Subscription,
    failing_since: float,
    attempt: dict[str, object],
    now: float,
) -> None:
    reason = (
        f"failing without a success since {iso_timestamp(failing_since)}; "
        f"last error: {attempt['error'] or attempt['status_code']}"
    )
    deliveries.subscriptions.disable(sub.id, reason, now=now)
    log.error(
        "subscription disabled after failing for too long", subscription_id=sub.id, reason=reason
    )
    notices.subscription_disabled(deliveries, sub, reason, now)


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
