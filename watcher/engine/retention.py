"""Forget what is old enough: final payments, finished deliveries, outbox events.

Production Redis runs with `maxmemory-policy noeviction`, so a Redis that fills up refuses
writes, and a watcher that cannot write misses payments. Retention keeps memory bounded by
traffic over WATCHER_RETENTION, not by the project's whole history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from watcher.delivery.store import FINISHED, DeliveryStore
from watcher.engine.store import PaymentStore

_BATCH = 500


@dataclass(frozen=True)
class RetentionResult:
    payments: int
    deliveries: int
    events: int


def forget_old(
    payments: PaymentStore,
    deliveries: DeliveryStore,
    *,
    now: float,
    retention: float,
    max_items: int = 10_000,
) -> RetentionResult:
    """Delete, oldest first and at most `max_items` of each, what ended before the cutoff.
    Payments still watched and deliveries still retrying are never deleted."""
    cutoff = now - retention
    return RetentionResult(
        payments=_forget_payments(payments, cutoff, max_items),
        deliveries=_forget_deliveries(deliveries, cutoff, max_items),
        events=_forget_events(payments, deliveries, cutoff),
    )


def _sweep_index(
    store: PaymentStore | DeliveryStore,
    index: str,
    cutoff: float,
    max_items: int,
    forget: Callable[[list[str]], list[bool]],
) -> int:
    """Walk an index (scored by creation time) below the cutoff, oldest first; `forget`
    deletes what it may and says which ones it deleted. Kept items are stepped over."""
    removed = kept = seen = 0
    while seen < max_items:
        ids = cast(
            list[str],
            store.redis.zrangebyscore(index, "-inf", cutoff, start=kept, num=_BATCH),
        )
        if not ids:
            break
        done = forget(ids)
        seen += len(ids)
        removed += sum(done)
        kept += len(ids) - sum(done)
    return removed


def _forget_payments(store: PaymentStore, cutoff: float, max_items: int) -> int:
    keys = store.keys

    def forget(ids: list[str]) -> list[bool]:
        done = []
        for record, payment_id in zip(store.get_many(ids), ids, strict=True):
            ended = (record.final_at or record.stopped_at or 0.0) if record else 0.0
            if record is not None and (record.is_watching or ended > cutoff):
                done.append(False)  # still pending, or ended too recently
                continue
            pipe = store.redis.pipeline(transaction=True)
            pipe.delete(keys.payment(payment_id), keys.transitions(payment_id))
            pipe.zrem(keys.payments_index, payment_id)
            pipe.zrem(keys.poll_schedule, payment_id)
            pipe.zrem(keys.pending_created, payment_id)
            pipe.execute()
            done.append(True)
        return done

    return _sweep_index(store, keys.payments_index, cutoff, max_items, forget)


def _forget_deliveries(store: DeliveryStore, cutoff: float, max_items: int) -> int:
    keys = store.keys

    def forget(ids: list[str]) -> list[bool]:
        done = []
        for delivery, delivery_id in zip(store.get_many(ids), ids, strict=True):
            if delivery is not None and (
                delivery.status not in FINISHED or delivery.updated_at > cutoff
            ):
                done.append(False)  # still retrying, or touched too recently
                continue
            pipe = store.redis.pipeline(transaction=True)
            pipe.delete(keys.delivery(delivery_id), keys.delivery_attempts(delivery_id))
            pipe.zrem(keys.deliveries_index, delivery_id)
            if delivery is not None:
                pipe.zrem(keys.subscription_deliveries(delivery.subscription_id), delivery_id)
            pipe.zrem(keys.deliver_schedule, delivery_id)
            pipe.zrem(keys.retry_schedule, delivery_id)
            pipe.execute()
            done.append(True)
        return done

    return _sweep_index(store, keys.deliveries_index, cutoff, max_items, forget)


def _forget_events(payments: PaymentStore, deliveries: DeliveryStore, cutoff: float) -> int:
    """Trim the outbox below the cutoff, but never an entry fan-out has not finished: not one
    it has not read yet, nor one it read and has not acknowledged."""
    keys = payments.keys
    deliveries.ensure_group()
    floor = (int(cutoff * 1000), 0)
    pending = cast(
        list[dict[str, object]],
        payments.redis.xpending_range(keys.outbox, keys.OUTBOX_GROUP, "-", "+", 1),
    )
    if pending:
        floor = min(floor, _stream_id(str(pending[0]["message_id"])))
    groups = cast(list[dict[str, object]], payments.redis.xinfo_groups(keys.outbox))
    for group in groups:
        if group.get("name") == keys.OUTBOX_GROUP:
            millis, seq = _stream_id(str(group.get("last-delivered-id") or "0-0"))
            floor = min(floor, (millis, seq + 1))
    minid = f"{floor[0]}-{floor[1]}"
    return int(payments.redis.xtrim(keys.outbox, minid=minid, approximate=False))


def _stream_id(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)
