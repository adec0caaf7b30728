"""Forget what is old enough: final payments, finished deliveries, outbox events.

Production Redis runs with `maxmemory-policy noeviction`, so a Redis that fills up refuses
writes, and a watcher that cannot write misses payments. Retention keeps memory bounded by
traffic over WATCHER_RETENTION, not by the project's whole history. It only asks: each store
deletes its own (see engine/history.py and delivery/history.py). It sits in delivery/ because
it asks both the payment and the delivery stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.delivery.store import DeliveryStore
from watcher.engine.store import PaymentStore


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
        payments=payments.history.forget_ended(cutoff, max_items),
        deliveries=deliveries.history.forget_finished(cutoff, max_items),
        events=deliveries.history.trim_outbox(cutoff),
    )
