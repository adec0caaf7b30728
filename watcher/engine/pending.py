"""The index of pending payments by Voltage's creation time, and what the sweeps ask of the
pending set: which of a page's payments are pending here, where list windows start (the
oldest pending payment, the fast sweep's watermark), and (for the fallback) bringing every
pending payment's next read forward."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

import redis

from watcher.engine.records import PaymentRecord
from watcher.keys import Keys
from watcher.lua import Scripts

GetMany = Callable[[Sequence[str]], list[PaymentRecord | None]]


class PendingIndex:
    def __init__(
        self, client: redis.Redis, keys: Keys, get_many: GetMany, scripts: Scripts
    ) -> None:
        self.redis = client
        self.keys = keys
        self.get_many = get_many
        self.scripts = scripts

    def among(self, payment_ids: Sequence[str]) -> list[str]:
        """Those of `payment_ids` still pending here (one round trip), in the order given."""
        if not payment_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for payment_id in payment_ids:
            pipe.zscore(self.keys.poll_schedule, payment_id)
        scores = pipe.execute()
        return [pid for pid, score in zip(payment_ids, scores, strict=True) if score is not None]

    def oldest_created(self) -> float | None:
        """Voltage's `created_at` of the oldest pending payment: where list windows start."""
        first = cast(
            list[tuple[str, float]],
            self.redis.zrange(self.keys.pending_created, 0, 0, withscores=True),
        )
        return float(first[0][1]) if first else None

    def backfill(self, now: float, batch: int = 1000) -> int:
        """Index pending payments watched before the creation-time index existed (an upgrade);
        cheap when there is nothing to do (two ZCARDs)."""
        if self.redis.zcard(self.keys.pending_created) >= int(
            self.redis.zcard(self.keys.poll_schedule)
        ):
            return 0
        added = 0
        start = 0
        while True:
            ids = cast(
                list[str], self.redis.zrange(self.keys.poll_schedule, start, start + batch - 1)
            )
            if not ids:
                return added
            start += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for record, payment_id in zip(self.get_many(ids), ids, strict=True):
                created = _created_at(record) if record is not None else now
                pipe.zadd(self.keys.pending_created, {payment_id: created}, nx=True)
            added += sum(pipe.execute())

    def pull_forward(self, now: float, spread: float, batch: int = 1000) -> int:
        """Bring every pending payment's next read to within `spread` seconds (spread out, not
        all at once): the fallback schedule starts from here when list calls fail."""
        moved = 0
        while True:
            later = cast(
                list[str],
                self.redis.zrangebyscore(self.keys.poll_schedule, now + spread, "+inf", 0, batch),
            )
            if not later:
                return moved
            pipe = self.redis.pipeline(transaction=False)
            for payment_id in later:
                at = now + random.uniform(0.0, spread)
                pipe.zadd(self.keys.poll_schedule, {payment_id: at}, xx=True, lt=True)
            pipe.execute()
            moved += len(later)

    def watermark(self) -> float | None:
        """The newest `updated_at` a fast sweep has seen: where the next one stops paging."""
        raw = cast(str | None, self.redis.hget(self.keys.sweep_state, "watermark"))
        return float(raw) if raw else None

    def note_sweep(self, now: float, seen: int) -> None:
        """When the last fast sweep ran and how many payments it looked at."""
        self.redis.hset(
            self.keys.sweep_state, mapping={"last_sweep_at": repr(now), "last_seen": seen}
        )

    def raise_watermark(self, value: float) -> float:
        """The fast sweep's watermark only ever rises, whichever sweep finishes last."""
        kept = self.scripts.raise_field(
            keys=[self.keys.sweep_state], args=["watermark", repr(value)]
        )
        return float(kept)


def _created_at(record: PaymentRecord) -> float:
    if record.created_at:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(record.created_at).timestamp()
    return record.watched_at
