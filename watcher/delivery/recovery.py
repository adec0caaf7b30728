"""Recover: re-send a subscription's failed and dead deliveries of a time range, or (a dry run)
only count what would be re-sent, by status, first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watcher.delivery.records import Delivery
from watcher.delivery.store import DEAD, FAILED

RECOVERABLE = (FAILED, DEAD)
PAGE = 500


class Deliveries(Protocol):
    def list_ids(
        self,
        *,
        subscription_id: str,
        since: float,
        until: float,
        newest_first: bool,
        offset: int,
        limit: int,
    ) -> list[str]: ...

    def get_many(self, delivery_ids: Sequence[str]) -> list[Delivery | None]: ...

    def redeliver(self, delivery_id: str, now: float) -> object: ...


@dataclass(frozen=True)
class Selection:
    """Which deliveries a recover takes: created in [since, until], in these statuses (of
    failed and dead), of these event types (all when empty)."""

    since: float
    until: float
    statuses: Collection[str] = RECOVERABLE
    event_types: Collection[str] = ()

    def takes(self, delivery: Delivery) -> bool:
        return delivery.status in self.statuses and (
            not self.event_types or delivery.event_type in self.event_types
        )


@dataclass
class Recovered:
    delivery_ids: list[str] = field(default_factory=list)
    by_status: Counter[str] = field(default_factory=Counter)


def recover(
    store: Deliveries, subscription_id: str, selection: Selection, now: float, *, dry_run: bool
) -> Recovered:
    """Every matching delivery, oldest first: re-sent, or with `dry_run` only counted."""
    found = Recovered()
    offset = 0
    while ids := store.list_ids(
        subscription_id=subscription_id,
        since=selection.since,
        until=selection.until,
        newest_first=False,
        offset=offset,
        limit=PAGE,
    ):
        offset += len(ids)
        for delivery in store.get_many(ids):
            if delivery is None or not selection.takes(delivery):
                continue
            found.by_status[delivery.status] += 1
            found.delivery_ids.append(delivery.id)
            if not dry_run:
                store.redeliver(delivery.id, now)
    return found
