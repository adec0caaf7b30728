"""Watched payments as the API pages them and Prometheus counts them, and retention's deletes:
the reads and deletes off the poll's hot path, which PaymentStore keeps.

Production Redis runs with `maxmemory-policy noeviction`, so a Redis that fills up refuses
writes, and a watcher that cannot write misses payments: what ended long ago is deleted here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import redis

from watcher.engine.pending import GetMany
from watcher.engine.records import PaymentRecord
from watcher.keys import Keys
from watcher.paging import first_score, walk_older, zset_page


@dataclass(frozen=True)
class PaymentCounts:
    pending: int  # on the poll schedule
    watched: int  # ever watched, and not forgotten yet
    next_poll_at: float | None  # the most overdue (or soonest) poll


class PaymentHistory:
    def __init__(self, client: redis.Redis, keys: Keys, get_many: GetMany) -> None:
        self.redis = client
        self.keys = keys
        self.get_many = get_many

    def page(
        self, *, cursor: str | None, limit: int, keep: Callable[[PaymentRecord], bool]
    ) -> tuple[list[PaymentRecord], str | None]:
        """Watched payments newest first, filtered by `keep`; raises CursorError."""
        return zset_page(
            self.redis,
            self.keys.payments_index,
            cursor=cursor,
            limit=limit,
            newest_first=True,
            load=self.get_many,
            keep=keep,
        )

    def counts(self) -> PaymentCounts:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.poll_schedule)
        pipe.zcard(self.keys.payments_index)
        pipe.zrange(self.keys.poll_schedule, 0, 0, withscores=True)
        pending, watched, first = pipe.execute()
        return PaymentCounts(int(pending), int(watched), first_score(first))

    def forget_ended(self, cutoff: float, max_items: int) -> int:
        """Delete payments that ended before `cutoff`, oldest watch first, looking at most at
        `max_items`; payments still watched, or ended since, stay. Returns how many went."""

        def forget(ids: list[str]) -> list[bool]:
            gone = [
                record is None
                or (
                    not record.is_watching
                    and (record.final_at or record.stopped_at or 0.0) <= cutoff
                )
                for record in self.get_many(ids)
            ]
            doomed = list(itertools.compress(ids, gone))
            if doomed:
                keys = self.keys
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(*(k for p in doomed for k in (keys.payment(p), keys.transitions(p))))
                for index in (keys.payments_index, keys.poll_schedule, keys.pending_created):
                    pipe.zrem(index, *doomed)
                pipe.execute()
            return gone

        return walk_older(self.redis, self.keys.payments_index, cutoff, max_items, forget)
