"""Deliveries in Redis: fan-out from the outbox, leased claims, attempts, re-sends.

One delivery exists per (event, subscription): its id is derived from both, so a fan-out
repeated after a crash finds the delivery it already made instead of making a second one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import redis

from watcher.delivery.records import Delivery, OutboxEvent, delivery_id_for
from watcher.delivery.subscription_checks import TEST_EVENT_TYPE
from watcher.delivery.subscriptions import Subscription, SubscriptionStore
from watcher.engine.records import EVENT_SCHEMA_VERSION, new_event_id
from watcher.engine.tally import count_in
from watcher.keys import Keys
from watcher.lua import scripts_for
from watcher.timing import iso_timestamp

if TYPE_CHECKING:
    from watcher.delivery.attempt_store import AttemptStore
    from watcher.delivery.history import DeliveryHistory


# The records are re-exported: the API and the attempts read them from the store.
__all__ = [
    "DEAD",
    "FAILED",
    "FINISHED",
    "PENDING",
    "SUCCEEDED",
    "Delivery",
    "DeliveryStatus",
    "DeliveryStore",
    "OutboxEvent",
    "delivery_id_for",
]


@dataclass(frozen=True)
class ClaimRoom:
    """How much one claim takes: `want` deliveries, looking at most `scan` due members of a
    schedule, in chunks of `chunk_size`, each chunk one of a subscriber's `cap` slots."""

    want: int
    scan: int
    chunk_size: int
    cap: int


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed at least once, another attempt is scheduled
    DEAD = "dead"  # out of attempts (or the subscription is gone): waits for a manual re-send


PENDING = DeliveryStatus.PENDING
SUCCEEDED = DeliveryStatus.SUCCEEDED
FAILED = DeliveryStatus.FAILED
DEAD = DeliveryStatus.DEAD
FINISHED = frozenset({SUCCEEDED, DEAD})  # begin_attempt.lua knows them too


class DeliveryStore:
    def __init__(self, client: redis.Redis, keys: Keys, subscriptions: SubscriptionStore) -> None:
        self.redis = client
        self.keys = keys
        self.subscriptions = subscriptions
        scripts = scripts_for(client)
        self._create = scripts.create_delivery
        self._claim = scripts.claim_due
        self._acquire = scripts.acquire_slot
        self._claim_with_room = scripts.claim_with_room
        # Keys around an id, as keys.py makes them (the claim learns ids as it goes).
        self._claim_heads = (
            keys.delivery(""),
            *keys.subscription_inflight("\0").split("\0"),
        )

    # --- events ---------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(
                self.keys.outbox, self.keys.OUTBOX_GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def event(self, entry_id: str) -> OutboxEvent | None:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            self.redis.xrange(self.keys.outbox, min=entry_id, max=entry_id, count=1),
        )
        return OutboxEvent.from_entry(*entries[0]) if entries else None

    def add_test_event(
        self, subscription_id: str, now: float | None = None, owner: str = ""
    ) -> OutboxEvent:
        """A `webhook.test` event for one subscription (whose app is `owner`), delivered like
        any other."""
        at = time.time() if now is None else now
        event_id = new_event_id()
        body = json.dumps(
            {
                "type": TEST_EVENT_TYPE,
                "timestamp": iso_timestamp(at),
                "version": EVENT_SCHEMA_VERSION,
                "data": {"subscription_id": subscription_id, "message": "voltage-watcher test"},
            },
            separators=(",", ":"),
        )
        entry = cast(
            str,
            self.redis.xadd(
                self.keys.outbox,
                {
                    "event_id": event_id,
                    "type": TEST_EVENT_TYPE,
                    "payment_id": "",
                    "body": body,
                    "target": subscription_id,
                    "app": owner,
                },
            ),
        )
        return OutboxEvent(entry, event_id, TEST_EVENT_TYPE, None, body, subscription_id, owner)

    def add_notice(self, event_id: str, event_type: str, body: str) -> None:
        """An operational event (delivery/notices.py): no payment, no app (admins' only)."""
        self.redis.xadd(
            self.keys.outbox,
            {"event_id": event_id, "type": event_type, "payment_id": "", "body": body,
             "target": "", "app": ""},
        )  # fmt: skip

    # --- fan-out --------------------------------------------------------------------------
    def fan_out(
        self, event: OutboxEvent, now: float, enabled: list[Subscription] | None = None
    ) -> list[str]:
        """One delivery per matching enabled subscription; repeating it creates nothing new.
        An app's subscription takes only its own app's events; an admin's takes them all.
        `enabled` lets a batch read the subscriptions once instead of once per event."""
        payment = json.loads(event.body).get("data", {}).get("payment")
        created = []
        for sub in self.subscriptions.all_enabled() if enabled is None else enabled:
            if event.target is not None and sub.id != event.target:
                continue
            if sub.app and sub.app != event.app:
                continue
            if event.target is None and not sub.matches(event.event_type, payment):
                continue
            delivery_id = delivery_id_for(event.event_id, sub.id)
            fields = {
                "id": delivery_id,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "subscription_id": sub.id,
                "payment_id": event.payment_id or "",
                "outbox_entry": event.entry_id,
                "status": PENDING,
                "attempts": "0",
                "created_at": repr(now),
                "updated_at": repr(now),
                "next_attempt_at": repr(now),
                "app": sub.app,
            }
            args: list[str] = [delivery_id, repr(now)]
            for key, value in fields.items():
                args.extend((key, value))
            if self._create(
                keys=[
                    self.keys.delivery(delivery_id),
                    self.keys.deliveries_index,
                    self.keys.subscription_deliveries(sub.id),
                    self.keys.deliver_schedule,
                ],
                args=args,
            ):
                created.append(delivery_id)
        return created

    def fan_out_new(self, consumer: str, now: float, count: int = 100) -> int:
        """Read new outbox entries as the fan-out group; acknowledge each only after its
        deliveries are stored, so a crash in between leaves it pending for the repair."""
        self.ensure_group()
        answer = cast(
            list[tuple[str, list[tuple[str, dict[str, str]]]]],
            self.redis.xreadgroup(
                self.keys.OUTBOX_GROUP, consumer, {self.keys.outbox: ">"}, count=count
            ),
        )
        return self._fan_out_entries(answer[0][1] if answer else [], now)

    def repair_fan_out(self, consumer: str, now: float, min_idle_ms: int, count: int = 100) -> int:
        """Take over entries another fan-out claimed but never acknowledged (it crashed)."""
        self.ensure_group()
        result: Any = self.redis.xautoclaim(
            self.keys.outbox,
            self.keys.OUTBOX_GROUP,
            consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        entries = [e for e in result[1] if e and e[1] is not None]
        return self._fan_out_entries(entries, now)

    def _fan_out_entries(self, entries: list[tuple[str, dict[str, str]]], now: float) -> int:
        made = 0
        enabled = self.subscriptions.all_enabled() if entries else []
        for entry_id, fields in entries:
            made += len(self.fan_out(OutboxEvent.from_entry(entry_id, fields), now, enabled))
            self.redis.xack(self.keys.outbox, self.keys.OUTBOX_GROUP, entry_id)
        return made

    def unacknowledged(self) -> int:
        self.ensure_group()
        info: Any = self.redis.xpending(self.keys.outbox, self.keys.OUTBOX_GROUP)
        return int(info.get("pending", 0))

    # --- claims and slots ---------------------------------------------------------------------
    def claim_due(self, schedule: str, now: float, lease: float, limit: int) -> list[str]:
        return cast(
            list[str], self._claim(keys=[schedule], args=[repr(now), repr(now + lease), limit])
        )

    def acquire_slot(
        self, subscription_id: str, delivery_id: str, now: float, lease: float, cap: int
    ) -> bool:
        return bool(
            self._acquire(
                keys=[self.keys.subscription_inflight(subscription_id)],
                args=[repr(now), repr(now + lease), cap, delivery_id],
            )
        )

    def in_flight(self, subscription_ids: Sequence[str], now: float) -> dict[str, int]:
        """Attempts under way per subscription (slots whose lease has not run out)."""
        pipe = self.redis.pipeline(transaction=False)
        for sub_id in subscription_ids:
            pipe.zcount(self.keys.subscription_inflight(sub_id), f"({now!r}", "+inf")
        return {s: int(n) for s, n in zip(subscription_ids, pipe.execute(), strict=True)}

    def release_slot(self, subscription_id: str, delivery_id: str) -> None:
        self.redis.zrem(self.keys.subscription_inflight(subscription_id), delivery_id)

    # --- reading --------------------------------------------------------------------------------
    def get(self, delivery_id: str, *, with_attempts: bool = False) -> Delivery | None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.delivery(delivery_id)))
        if not data:
            return None
        delivery = Delivery.from_hash(data)
        if with_attempts:
            delivery.attempt_log = [
                json.loads(item)
                for item in cast(
                    list[str], self.redis.lrange(self.keys.delivery_attempts(delivery_id), 0, -1)
                )
            ]
        return delivery

    def get_many(self, delivery_ids: Sequence[str]) -> list[Delivery | None]:
        """Several deliveries (without attempts) in one round trip, in the order asked."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.hgetall(self.keys.delivery(delivery_id))
        found = cast(list[dict[str, str]], pipe.execute())
        return [Delivery.from_hash(data) if data else None for data in found]

    def subscription_ids(self, delivery_ids: Sequence[str]) -> list[str | None]:
        """Whose each delivery is, in one round trip: enough to group a batch by subscriber
        without reading the whole records."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.hget(self.keys.delivery(delivery_id), "subscription_id")
        return cast(list[str | None], pipe.execute())

    def list_ids(
        self,
        *,
        subscription_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        newest_first: bool = True,
        offset: int = 0,
        limit: int = 100,
    ) -> list[str]:
        key = (
            self.keys.subscription_deliveries(subscription_id)
            if subscription_id
            else self.keys.deliveries_index
        )
        low = "-inf" if since is None else repr(since)
        high = "+inf" if until is None else repr(until)
        if newest_first:
            return cast(
                list[str],
                self.redis.zrevrangebyscore(key, high, low, start=offset, num=limit),
            )
        return cast(list[str], self.redis.zrangebyscore(key, low, high, start=offset, num=limit))

    # --- outcomes -------------------------------------------------------------------------------
    @cached_property
    def attempts(self) -> AttemptStore:
        """An attempt's one read and one write (delivery/attempt_store.py)."""
        from watcher.delivery.attempt_store import AttemptStore

        return AttemptStore(self.redis, self.keys)

    def finish_without_attempt(self, delivery: Delivery, *, reason: str, now: float) -> None:
        """Dead-letter a delivery that cannot be attempted (its subscription is gone)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.keys.delivery(delivery.id),
            mapping={
                "status": DEAD,
                "last_error": reason,
                "updated_at": repr(now),
                "next_attempt_at": "",
            },
        )
        pipe.zrem(self.keys.deliver_schedule, delivery.id)
        pipe.zrem(self.keys.retry_schedule, delivery.id)
        count_in(pipe, self.keys, "deliveries:dead")
        pipe.execute()

    def release_claims(self, delivery_ids: list[str], at: float) -> None:
        """Hand claimed deliveries back to whichever schedule holds them, due at `at`: one
        ZADD XX per schedule, however many there are."""
        if not delivery_ids:
            return
        members = dict.fromkeys(delivery_ids, at)
        pipe = self.redis.pipeline(transaction=False)
        for schedule in (self.keys.deliver_schedule, self.keys.retry_schedule):
            pipe.zadd(schedule, members, xx=True)
        pipe.execute()

    def redeliver(self, delivery_id: str, now: float) -> Delivery | None:
        """A manual re-send: due now on the first-attempt queue, same event, same webhook-id."""
        delivery = self.get(delivery_id)
        if delivery is None:
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.keys.delivery(delivery_id),
            mapping={
                "status": PENDING,
                "updated_at": repr(now),
                "next_attempt_at": repr(now),
                "attempts_before_resend": str(delivery.attempts),
            },
        )
        pipe.zrem(self.keys.retry_schedule, delivery_id)
        pipe.zadd(self.keys.deliver_schedule, {delivery_id: now})
        pipe.execute()
        return self.get(delivery_id)

    def claim_with_room(
        self, now: float, lease: float, room: ClaimRoom, *, retries: bool = True
    ) -> list[tuple[bool, str, str]]:
        """Due first attempts (then retries) of subscribers with room, claimed in chunks
        (claim_with_room.lua): (is it a retry, subscription id, delivery id), in claim order."""
        schedules = [self.keys.deliver_schedule, *([self.keys.retry_schedule] if retries else [])]
        flat = self._claim_with_room(
            keys=schedules,
            args=[repr(now), repr(now + lease), room.want, room.scan, room.chunk_size,
                  room.cap, *self._claim_heads],
        )  # fmt: skip
        return [(flat[i] == 2, flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    # --- off the hot path ------------------------------------------------------------------------
    @property
    def history(self) -> DeliveryHistory:
        """Pages, counts and retention's deletes of deliveries and events (delivery/history.py)."""
        from watcher.delivery.history import DeliveryHistory

        return DeliveryHistory(self.redis, self.keys, self.get_many, self.ensure_group)
