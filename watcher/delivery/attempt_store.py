"""The Redis side of one delivery attempt: one read before the POST, one write after it.

The read (`begin_attempt.lua`) brings the delivery, its subscription and its event and takes
an in-flight slot; the write (`finish_attempt.lua`) logs the attempt, moves the delivery on,
counts it, gives the slot back and notes the subscriber's health and its hourly health
bucket (delivery/health_stats.py). They were seven round trips and about 17 commands
(docs/performance.md). In a chunk that goes well, the write after one
attempt also begins the next (`Then`): about one round trip per delivery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import redis

from watcher.delivery import health_stats
from watcher.delivery.store import SUCCEEDED, Delivery, OutboxEvent
from watcher.delivery.subscriptions import Subscription
from watcher.keys import Keys
from watcher.lua import scripts_for

# What the subscriber's answer says about it: cleared, failing, or nothing to note (a 410).
Health = Literal["success", "failure", ""]


class Begin(StrEnum):
    ACQUIRED = "acquired"  # holds a slot: POST it
    DROP = "drop"  # subscription gone or disabled, or event gone: dead-letter it
    POSTPONED = "postponed"  # no free slot: back on its schedule
    SKIPPED = "skipped"  # missing or finished


@dataclass(frozen=True)
class Begun:
    outcome: Begin
    delivery: Delivery | None = None
    subscription: Subscription | None = None  # None: deleted
    event: OutboxEvent | None = None  # None: no longer stored


@dataclass(frozen=True)
class SlotTerms:
    """How an attempt holds a slot: for `lease` seconds, at most `cap` at once per subscriber;
    with none free, the delivery is due again `postpone` seconds later."""

    lease: float
    cap: int
    postpone: float


@dataclass(frozen=True)
class Then:
    """A chunk's next delivery, begun by the write that finishes the one before it."""

    delivery_id: str
    now: float
    slot: SlotTerms


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class AttemptStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._client = client
        scripts = scripts_for(client)
        self._begin = scripts.begin_attempt
        self._finish = scripts.finish_attempt
        # A subscription's keys around its id, as keys.py makes them (the read script only
        # learns the id from the delivery).
        self._sub_head, self._inflight_tail = keys.subscription_inflight("\0").split("\0")
        if keys.subscription("\0") != f"{self._sub_head}\0":
            raise ValueError("the in-flight key must extend the subscription's key")

    def begin(self, delivery_id: str, now: float, slot: SlotTerms) -> Begun:
        keys = self.keys
        answer: list[Any] = self._begin(
            keys=[
                keys.delivery(delivery_id),
                keys.deliver_schedule,
                keys.retry_schedule,
                keys.outbox,
            ],
            args=self._begin_args(delivery_id, now, slot),
        )
        return _begun(answer)

    def _begin_args(self, delivery_id: str, now: float, slot: SlotTerms) -> list[Any]:
        return [
            delivery_id,
            repr(now),
            repr(now + slot.lease),
            slot.cap,
            repr(now + slot.postpone),
            self._sub_head,
            self._inflight_tail,
        ]

    def finish(
        self,
        delivery: Delivery,
        attempt: dict[str, Any],
        *,
        status: str,
        now: float,
        next_attempt_at: float | None,
        health: Health = "",
        then: Then | None = None,
    ) -> tuple[float, Begun | None]:
        """Returns since when the subscriber has been failing (now, unless a failure
        continues an earlier streak), and the begin of `then`, the chunk's next delivery."""
        updates = _updates(delivery, attempt, status, now, next_attempt_at)
        args: list[Any] = [
            delivery.id,
            json.dumps(attempt),
            status,
            repr(next_attempt_at) if next_attempt_at is not None else "",
            health,
            repr(now),
            *_stats_args(attempt, status, now),
            2 * len(updates),
            *(item for pair in updates.items() for item in pair),
        ]
        keys = self.keys
        sub_id = delivery.subscription_id
        script_keys = [
            keys.delivery(delivery.id),
            keys.delivery_attempts(delivery.id),
            keys.deliver_schedule,
            keys.retry_schedule,
            keys.counters,
            keys.subscription_inflight(sub_id),
            keys.subscription(sub_id),
            keys.subscription_health(sub_id, health_stats.hour_of(now)),
        ]
        if then is not None:
            script_keys += [keys.delivery(then.delivery_id), keys.outbox]
            args += self._begin_args(then.delivery_id, then.now, then.slot)
        answer: list[Any] = self._finish(keys=script_keys, args=args)
        since = float(answer[0]) if answer[0] else now
        return since, _begun(answer[1]) if len(answer) > 1 else None

    def health_hours(self, subscription_id: str, now: float) -> dict[int, dict[str, str]]:
        """The subscription's hourly health buckets of this hour and the 23 before it (23 to
        24 hours, whole hours: the answer's `since` says where it starts), in one round trip
        (hours without attempts are absent)."""
        hours = health_stats.window_hours(now)
        pipe = self._client.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(self.keys.subscription_health(subscription_id, hour))
        found: list[dict[str, str]] = pipe.execute()
        return {hour: bucket for hour, bucket in zip(hours, found, strict=True) if bucket}


def _stats_args(attempt: dict[str, Any], status: str, now: float) -> list[str]:
    """The health bucket's arguments of `finish_attempt.lua`: latency field, success flag,
    failure record (or ''), TTL."""
    succeeded = status == SUCCEEDED
    return [
        health_stats.latency_field(float(attempt.get("latency_ms") or 0.0)),
        "1" if succeeded else "0",
        "" if succeeded else health_stats.failure_record(attempt, now),
        str(health_stats.BUCKET_TTL),
    ]


def _begun(answer: list[Any]) -> Begun:
    outcome = Begin(answer[0])
    if len(answer) == 1:
        return Begun(outcome)
    delivery = Delivery.from_hash(_pairs(answer[1]))
    sub_fields = _pairs(answer[2])
    event_fields = _pairs(answer[3])
    return Begun(
        outcome,
        delivery,
        Subscription.from_hash(sub_fields) if sub_fields else None,
        OutboxEvent.from_entry(delivery.outbox_entry, event_fields) if event_fields else None,
    )


def _updates(
    delivery: Delivery,
    attempt: dict[str, Any],
    status: str,
    now: float,
    next_attempt_at: float | None,
) -> dict[str, str]:
    updates: dict[str, str] = {
        "status": status,
        "attempts": str(delivery.attempts + 1),
        "updated_at": repr(now),
        "last_status_code": str(attempt.get("status_code") or ""),
        "last_error": attempt.get("error") or "",
        "next_attempt_at": repr(next_attempt_at) if next_attempt_at is not None else "",
    }
    if status == SUCCEEDED:
        updates["succeeded_at"] = repr(now)
    return updates
