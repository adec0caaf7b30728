"""The Redis side of one delivery attempt: one read before the POST, one write after it.

The read (`begin_attempt.lua`) brings the delivery, its subscription and its event and takes
an in-flight slot; the write (`finish_attempt.lua`) logs the attempt, moves the delivery on,
counts it, gives the slot back and notes the subscriber's health. They were seven round trips
and about 17 commands (docs/performance.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import redis

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


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class AttemptStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        scripts = scripts_for(client)
        self._begin = scripts.begin_attempt
        self._finish = scripts.finish_attempt
        # A subscription's keys around its id, as keys.py makes them (the read script only
        # learns the id from the delivery).
        self._sub_head, self._inflight_tail = keys.subscription_inflight("\0").split("\0")
        if keys.subscription("\0") != f"{self._sub_head}\0":
            raise ValueError("the in-flight key must extend the subscription's key")

    def begin(
        self, delivery_id: str, now: float, *, lease: float, cap: int, postpone_until: float
    ) -> Begun:
        keys = self.keys
        answer: list[Any] = self._begin(
            keys=[
                keys.delivery(delivery_id),
                keys.deliver_schedule,
                keys.retry_schedule,
                keys.outbox,
            ],
            args=[
                delivery_id,
                repr(now),
                repr(now + lease),
                cap,
                repr(postpone_until),
                self._sub_head,
                self._inflight_tail,
            ],
        )
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

    def finish(
        self,
        delivery: Delivery,
        attempt: dict[str, Any],
        *,
        status: str,
        now: float,
        next_attempt_at: float | None,
        health: Health = "",
    ) -> float:
        """Returns since when the subscriber has been failing (now, unless a failure
        continues an earlier streak)."""
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
        args: list[str] = [
            delivery.id,
            json.dumps(attempt),
            status,
            repr(next_attempt_at) if next_attempt_at is not None else "",
            health,
            repr(now),
        ]
        for key, value in updates.items():
            args.extend((key, value))
        keys = self.keys
        sub_id = delivery.subscription_id
        since = self._finish(
            keys=[
                keys.delivery(delivery.id),
                keys.delivery_attempts(delivery.id),
                keys.deliver_schedule,
                keys.retry_schedule,
                keys.counters,
                keys.subscription_inflight(sub_id),
                keys.subscription(sub_id),
            ],
            args=args,
        )
        return float(since) if since else now
