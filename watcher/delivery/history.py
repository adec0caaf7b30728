"""Deliveries and events as the API pages them and Prometheus counts them, and retention's
deletes: the reads and deletes off the delivery hot path, which DeliveryStore keeps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from watcher.delivery.store import FINISHED, Delivery
from watcher.ids import parse_stream_id
from watcher.keys import Keys
from watcher.paging import Entry, first_score, stream_page, walk_older, zset_page
from watcher.timing import iso_timestamp

GetMany = Callable[[Sequence[str]], list[Delivery | None]]


def public_event(entry: Entry) -> dict[str, Any]:
    """An outbox entry as the API and `watcher events` show it: the body every delivery of
    it carries, parsed."""
    entry_id, fields = entry
    try:
        body = json.loads(fields.get("body") or "{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {"value": body}
    millis = int(entry_id.split("-", maxsplit=1)[0])
    return {
        "id": fields.get("event_id", ""),
        "type": fields.get("type", ""),
        "payment_id": fields.get("payment_id") or None,
        "subscription_id": fields.get("target") or None,
        "created_at": iso_timestamp(millis / 1000),
        "body": body,
        "app_id": fields.get("app") or None,
    }


@dataclass(frozen=True)
class DeliveryCounts:
    first_attempt: int  # scheduled (due or leased) for a first attempt or a re-send
    retry: int  # scheduled for a retry
    first_attempt_due: float | None  # the most overdue (or soonest) of each schedule
    retry_due: float | None
    events: int  # in the outbox stream
    unacknowledged: int  # outbox events a fan-out claimed and has not acknowledged


class DeliveryHistory:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        get_many: GetMany,
        ensure_group: Callable[[], None],
    ) -> None:
        self.redis = client
        self.keys = keys
        self.get_many = get_many
        self.ensure_group = ensure_group

    def page(
        self,
        *,
        subscription_id: str | None,
        cursor: str | None,
        limit: int,
        keep: Callable[[Delivery], bool],
    ) -> tuple[list[Delivery], str | None]:
        """Deliveries newest first (of one subscription, or all), filtered by `keep`; raises
        CursorError."""
        index = (
            self.keys.subscription_deliveries(subscription_id)
            if subscription_id
            else self.keys.deliveries_index
        )
        return zset_page(
            self.redis,
            index,
            cursor=cursor,
            limit=limit,
            newest_first=True,
            load=self.get_many,
            keep=keep,
        )

    def event_page(
        self,
        *,
        cursor: str | None,
        limit: int,
        newest_first: bool,
        event_type: str | None = None,
        payment_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        app: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Events (as `public_event` shows them) of a type, of a payment, between two times
        (ms, inclusive), of an app ("" for an admin's), each filter only when given; raises
        CursorError."""

        def keep(_entry_id: str, fields: dict[str, str]) -> bool:
            if event_type is not None and fields.get("type") != event_type:
                return False
            if app is not None and fields.get("app", "") != app:
                return False
            return payment_id is None or fields.get("payment_id") == payment_id

        entries, next_cursor = stream_page(
            self.redis,
            self.keys.outbox,
            cursor=cursor,
            limit=limit,
            newest_first=newest_first,
            since_ms=since_ms,
            until_ms=until_ms,
            keep=keep,
        )
        return [public_event(entry) for entry in entries], next_cursor

    def counts(self) -> DeliveryCounts:
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for schedule in (keys.deliver_schedule, keys.retry_schedule):
            pipe.zcard(schedule)
            pipe.zrange(schedule, 0, 0, withscores=True)
        pipe.xlen(keys.outbox)
        first, first_due, retry, retry_due, events = pipe.execute()
        try:
            info: Any = self.redis.xpending(keys.outbox, keys.OUTBOX_GROUP)
            unacknowledged = int(info.get("pending", 0))
        except redis.ResponseError:
            unacknowledged = 0  # no stream or no group yet: nothing pending
        return DeliveryCounts(
            int(first),
            int(retry),
            first_score(first_due),
            first_score(retry_due),
            int(events),
            unacknowledged,
        )

    def forget_finished(self, cutoff: float, max_items: int) -> int:
        """Delete deliveries finished and untouched since before `cutoff`, oldest first,
        looking at most at `max_items`; those still retrying stay. Returns how many went."""

        def forget(ids: list[str]) -> list[bool]:
            found = self.get_many(ids)
            gone = [
                delivery is None or (delivery.status in FINISHED and delivery.updated_at <= cutoff)
                for delivery in found
            ]
            if any(gone):
                self._delete(list(itertools.compress(zip(ids, found, strict=True), gone)))
            return gone

        return walk_older(self.redis, self.keys.deliveries_index, cutoff, max_items, forget)

    def _delete(self, doomed: list[tuple[str, Delivery | None]]) -> None:
        keys = self.keys
        ids = [delivery_id for delivery_id, _ in doomed]
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*(k for d in ids for k in (keys.delivery(d), keys.delivery_attempts(d))))
        for index in (keys.deliveries_index, keys.deliver_schedule, keys.retry_schedule):
            pipe.zrem(index, *ids)
        for delivery_id, delivery in doomed:
            if delivery is not None:
                pipe.zrem(keys.subscription_deliveries(delivery.subscription_id), delivery_id)
        pipe.execute()

    def trim_outbox(self, cutoff: float) -> int:
        """Trim the outbox below the cutoff, but never an entry fan-out has not finished: not
        one it has not read yet, nor one it read and has not acknowledged."""
        keys = self.keys
        self.ensure_group()
        floor = (int(cutoff * 1000), 0)
        pending = cast(
            list[dict[str, object]],
            self.redis.xpending_range(keys.outbox, keys.OUTBOX_GROUP, "-", "+", 1),
        )
        if pending:
            floor = min(floor, parse_stream_id(str(pending[0]["message_id"])))
        groups = cast(list[dict[str, object]], self.redis.xinfo_groups(keys.outbox))
        for group in groups:
            if group.get("name") == keys.OUTBOX_GROUP:
                millis, seq = parse_stream_id(str(group.get("last-delivered-id") or "0-0"))
                floor = min(floor, (millis, seq + 1))
        minid = f"{floor[0]}-{floor[1]}"
        return int(self.redis.xtrim(keys.outbox, minid=minid, approximate=False))
