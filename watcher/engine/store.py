"""Reads and writes of payment records, schedules and the outbox. No Voltage, no Celery."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from watcher.durability import Durability
from watcher.engine.history import PaymentHistory
from watcher.engine.pending import PendingIndex
from watcher.engine.record_fields import adopted_fields, final_event, payment_fields
from watcher.engine.records import PaymentRecord
from watcher.engine.tally import LATENCY_BUCKETS, Collected, Tally, bucket_field, count_in
from watcher.keys import Keys
from watcher.lua import Scripts, scripts_for
from watcher.voltage.models import FINAL_STATUSES, Payment

CLAIM_TTL = 3600  # seconds: far longer than a create takes, short enough to leave nothing behind

__all__ = ["LATENCY_BUCKETS", "PaymentStore", "TransitionOutcome", "TransitionResult"]


class TransitionOutcome(StrEnum):
    OK = "ok"  # this caller made the move
    STALE = "stale"  # someone else changed the record first
    FINAL = "final"  # already final: nothing more happens
    MISSING = "missing"


@dataclass(frozen=True)
class TransitionResult:
    outcome: TransitionOutcome
    version: int | None = None
    event_id: str | None = None


class PaymentStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts | None = None,
        durability: Durability | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts or scripts_for(client)
        self.durability = durability or Durability()
        self.pending = PendingIndex(client, keys, self.get_many, self.scripts)
        self.tally = Tally(client, keys)

    # --- reading ---------------------------------------------------------------------------------
    def claim(self, payment_id: str, owner: str) -> str:
        """Mark `payment_id` as being created by `owner` (before Voltage is asked); answers
        who holds the claim, `owner` unless another got there first."""
        held = self.scripts.claim(
            keys=[self.keys.payment_claim(payment_id)], args=[owner, CLAIM_TTL]
        )
        return cast(str, held)

    def mark_created(self, payment_id: str, extra: dict[str, str]) -> bool:
        """The create's own fields on a record a Voltage webhook adopted first; False when
        the record was a create's already."""
        pairs = [item for pair in extra.items() for item in pair]
        return bool(self.scripts.mark_created(keys=[self.keys.payment(payment_id)], args=pairs))

    def get(self, payment_id: str) -> PaymentRecord | None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.payment(payment_id)))
        return PaymentRecord.from_hash(data) if data else None

    def get_many(self, payment_ids: Sequence[str]) -> list[PaymentRecord | None]:
        """Several records in one round trip, in the order asked (None where missing)."""
        pipe = self.redis.pipeline(transaction=False)
        for payment_id in payment_ids:
            pipe.hgetall(self.keys.payment(payment_id))
        found = cast(list[dict[str, str]], pipe.execute())
        return [PaymentRecord.from_hash(data) if data else None for data in found]

    def transitions(self, payment_id: str) -> list[dict[str, Any]]:
        return [
            json.loads(item) for item in self.redis.lrange(self.keys.transitions(payment_id), 0, -1)
        ]

    def pending_ids(self, limit: int = 100) -> list[tuple[str, float]]:
        """Scheduled payments with the time of their next poll, soonest first."""
        pairs = cast(
            list[tuple[str, float]],
            self.redis.zrange(self.keys.poll_schedule, 0, limit - 1, withscores=True),
        )
        return [(member, float(score)) for member, score in pairs]

    def pending_count(self) -> int:
        return int(self.redis.zcard(self.keys.poll_schedule))

    def watched_ids(self, limit: int = 100, newest_first: bool = True) -> list[str]:
        key = self.keys.payments_index
        if newest_first:
            return cast(list[str], self.redis.zrevrange(key, 0, limit - 1))
        return cast(list[str], self.redis.zrange(key, 0, limit - 1))

    def next_poll_at(self, payment_id: str) -> float | None:
        score = self.redis.zscore(self.keys.poll_schedule, payment_id)
        return float(score) if score is not None else None

    # --- adopting --------------------------------------------------------------------------------
    def adopt(
        self,
        payment: Payment,
        *,
        source: str,
        now: float,
        first_poll_at: float,
        extra: dict[str, str] | None = None,
    ) -> bool:
        """Start watching; False if this payment was watched already (nothing changes).

        A payment already final when adopted is not scheduled; its event is emitted at once
        with `previous_status: null`, because whoever asked to watch it wants to know."""
        fields = adopted_fields(payment, source=source, now=now, extra=extra)
        final = payment.is_final
        event_id, event_type, body = final_event(payment, previous_status=None, now=now)
        created_at = payment.created_at.timestamp() if payment.created_at else now
        args: list[str] = [
            payment.id,
            repr(now),
            repr(first_poll_at),
            "0" if final else "1",
            event_id,
            event_type,
            body,
            repr(created_at),
        ]
        for key, value in fields.items():
            args.extend((key, value))
        created = self.scripts.adopt(
            keys=[
                self.keys.payment(payment.id),
                self.keys.payments_index,
                self.keys.poll_schedule,
                self.keys.outbox,
                self.keys.pending_created,
            ],
            args=args,
        )
        pipe = self.redis.pipeline(transaction=False)
        if created:
            transition = {
                "from": None,
                "to": payment.status,
                "at": now,
                "event_id": event_id or None,
            }
            pipe.rpush(self.keys.transitions(payment.id), json.dumps(transition))
            if final:
                count_in(pipe, self.keys, f"transitions:{payment.status}")
        self._replicated(pipe, payment.id, now)
        return bool(created)

    def ensure_replicated(self, payment_id: str, now: float) -> None:
        """A watch found already stored may be one whose first WAIT fell short: wait again."""
        self._replicated(self.redis.pipeline(transaction=False), payment_id, now)

    def _replicated(self, pipe: Any, payment_id: str, now: float) -> None:
        """Run `pipe`, then (when WATCHER_REDIS_MIN_REPLICAS is set) wait for replicas to hold
        this watch: a write on the same connection first, so the WAIT covers it."""
        if self.durability.replicas > 0:
            pipe.hset(self.keys.payment(payment_id), "replicated_at", repr(now))
            self.durability.wait_in(pipe)
        results = pipe.execute()
        self.durability.check(results, f"the watch of payment {payment_id}")

    # --- polling bookkeeping ---------------------------------------------------------------------
    def claim_due(self, now: float, lease: float, limit: int) -> list[str]:
        return list(
            self.scripts.claim_due(
                keys=[self.keys.poll_schedule], args=[repr(now), repr(now + lease), limit]
            )
        )

    def forget_schedule(self, payment_id: str) -> None:
        """A payment no longer watched leaves every schedule of pending payments."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.poll_schedule, payment_id)
        pipe.zrem(self.keys.pending_created, payment_id)
        pipe.execute()

    def reschedule(self, payment_id: str, at: float, *, only_earlier: bool = False) -> bool:
        """Set the next poll, only if the payment is still scheduled."""
        changed = self.scripts.reschedule(
            keys=[self.keys.poll_schedule],
            args=[payment_id, repr(at), "LT" if only_earlier else ""],
        )
        return bool(changed)

    def record_poll(
        self,
        payment_id: str,
        *,
        now: float,
        fields: dict[str, str] | None = None,
        error: str | None = None,
    ) -> None:
        """Note a poll that changed no status (errors included); not versioned on purpose."""
        self.write_poll(payment_id, None, now=now, fields=fields, error=error)

    def write_poll(
        self,
        payment_id: str,
        version: int | None,
        *,
        now: float,
        fields: dict[str, str] | None = None,
        error: str | None = None,
        not_found_since: float | None = None,
        next_poll_at: float | None = None,
    ) -> bool:
        """A poll that changed no status, in one round trip: its fields, the counters and
        latency this thread collected meanwhile, and its next poll (only if still scheduled).
        False, with only the counters written, when the record is no longer at `version`."""
        collected = self.tally.collected or Collected()
        counters = collected.take_counters()
        seconds = collected.take_latency("poll")
        updates = {"last_poll_at": repr(now), **(fields or {})}
        increments = {"poll_count": 1}
        if not_found_since is not None:
            updates["not_found_since"] = repr(not_found_since)
        else:
            updates.update(last_error=error or "", not_found_since="", error_streak="0")
            if error:
                del updates["error_streak"]
                increments.update(error_count=1, error_streak=1)
        args: list[str | int] = [
            "" if version is None else str(version),
            payment_id,
            "" if next_poll_at is None else repr(next_poll_at),
            "" if seconds is None else bucket_field(seconds),
            0 if seconds is None else round(seconds * 1_000_000),
            len(counters),
            len(increments),
        ]
        for pairs in (counters, increments, updates):
            for key, value in pairs.items():
                args.extend((key, value))
        keys = self.keys
        written = self.scripts.record_poll(
            keys=[
                keys.payment(payment_id),
                keys.poll_schedule,
                keys.counters,
                keys.latency("poll"),
            ],
            args=args,
        )
        return bool(written)

    def stop(self, payment_id: str, *, reason: str, now: float) -> None:
        """Stop polling for good and say why (hard limit reached, never found...)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.keys.payment(payment_id),
            mapping={"stopped_reason": reason, "stopped_at": repr(now)},
        )
        pipe.zrem(self.keys.poll_schedule, payment_id)
        pipe.zrem(self.keys.pending_created, payment_id)
        count_in(pipe, self.keys, f"stopped:{reason}")
        pipe.execute()

    def count(self, name: str, amount: int = 1) -> None:
        self.tally.count(name, amount)

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.tally.observe_latency(kind, seconds)

    def latency_histogram(self, kind: str) -> tuple[list[tuple[str, int]], int, float]:
        return self.tally.latency_histogram(kind)

    def counters(self) -> dict[str, int]:
        return self.tally.counters()

    # --- transitions -----------------------------------------------------------------------------
    def transition(
        self,
        record: PaymentRecord,
        payment: Payment,
        *,
        now: float,
    ) -> TransitionResult:
        """Compare-and-set the status; a final status also emits its outbox event."""
        new_status = payment.status
        final = new_status in FINAL_STATUSES
        event_id, event_type, body = final_event(payment, previous_status=record.status, now=now)
        transition = json.dumps(
            {"from": record.status, "to": new_status, "at": now, "event_id": event_id or None}
        )
        fields = {
            **payment_fields(payment),
            "last_poll_at": repr(now),
            "last_error": "",
            "error_streak": "0",
            "not_found_since": "",
        }
        args: list[str] = [
            str(record.version),
            new_status,
            "1" if final else "0",
            repr(now),
            transition,
            event_id,
            event_type,
            body,
            record.id,
        ]
        for key, value in fields.items():
            args.extend((key, value))
        outcome, version = self.scripts.transition(
            keys=[
                self.keys.payment(record.id),
                self.keys.poll_schedule,
                self.keys.outbox,
                self.keys.transitions(record.id),
                self.keys.pending_created,
            ],
            args=args,
        )
        if outcome == TransitionOutcome.OK and final:
            self.count(f"transitions:{new_status}")
        return TransitionResult(
            outcome=TransitionOutcome(outcome),
            version=int(version) if version else None,
            event_id=event_id if outcome == "ok" and final else None,
        )

    # --- the outbox ------------------------------------------------------------------------------
    def outbox_events(self, count: int = 1000) -> list[dict[str, str]]:
        """Outbox entries oldest first, each with its stream id as `entry_id`."""
        entries = cast(
            list[tuple[str, dict[str, str]]], self.redis.xrange(self.keys.outbox, count=count)
        )
        return [{"entry_id": entry_id, **fields} for entry_id, fields in entries]

    # --- off the hot path ------------------------------------------------------------------------
    @property
    def history(self) -> PaymentHistory:
        """Pages, counts and retention's deletes of the payments kept here (engine/history.py)."""
        return PaymentHistory(self.redis, self.keys, self.get_many)
