"""Prometheus metrics, read from Redis at scrape time.

Every number lives in Redis already (schedules, counters, the outbox), written by whichever
worker did the work, so a custom collector reads them when Prometheus scrapes instead of each
process keeping its own partial counts. Each store counts its own (a pipelined round trip
each), so nothing here knows a key.

Not exported: a gauge of current dead letters (`watcher_dead_letters_total` counts
dead-letterings; re-sent ones are not subtracted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from watcher.delivery.history import DeliveryCounts
from watcher.engine.history import PaymentCounts
from watcher.logging import get_logger
from watcher.runtime import Runtime
from watcher.voltage.purpose import Purpose

log = get_logger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# counters hash prefix -> (metric name, label name, help)
_LABELLED = {
    "transitions": ("watcher_transitions", "status", "Status changes detected, by new status"),
    "voltage_errors": ("watcher_voltage_errors", "kind", "Failed Voltage reads, by kind"),
    "deliveries": ("watcher_deliveries", "outcome", "Delivery attempts, by outcome"),
    "stopped": ("watcher_stopped_payments", "reason", "Payments no longer polled, by reason"),
    "voltage_requests": (
        "watcher_voltage_requests",
        "purpose",
        "Voltage requests sent (retries included), by why they were sent",
    ),
    "list_errors": ("watcher_list_errors", "job", "Failed Voltage list calls, by job"),
}
# Labels that always appear (at 0 until used), so a dashboard has every series from the start.
_ALWAYS = {"voltage_requests": [p.value for p in Purpose]}
_PLAIN = {
    "polls": (
        "watcher_polls",
        "Polls Voltage answered, 404s included (failures are in watcher_voltage_errors_total)",
    ),
    "dispatch_ticks": ("watcher_dispatch_ticks", "Dispatcher ticks run"),
    "sweeps": ("watcher_sweeps", "Fast list sweeps run"),
    "reconcile_pages": ("watcher_reconcile_pages", "Reconciliation pages read"),
    "reconcile_passes": ("watcher_reconcile_passes", "Reconciliation passes completed"),
    "reconcile_confirmed": (
        "watcher_reconcile_confirmed",
        "Transitions reconciliation confirmed before the fast sweep did (it missed them, or "
        "had not reached them yet)",
    ),
    "fallback_entries": (
        "watcher_fallback_entries",
        "Times list calls failed long enough to fall back to per-payment polls",
    ),
}


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows, as each store counts it."""

    payments: PaymentCounts
    deliveries: DeliveryCounts
    subscriptions: int
    counters: dict[str, int]
    fallback: bool
    poll_latency: tuple[list[tuple[str, int]], int, float]


class WatcherCollector:
    """Reads the watcher's state from Redis at each scrape."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; nothing to clash with

    def collect(self) -> Iterable[Metric]:
        try:
            snapshot = self._read()
        except redis.RedisError as exc:
            log.warning("metrics: redis unreachable", error=type(exc).__name__)
            yield GaugeMetricFamily(
                "watcher_redis_up", "1 if the watcher's Redis answered this scrape", value=0
            )
            return
        yield GaugeMetricFamily(
            "watcher_redis_up", "1 if the watcher's Redis answered this scrape", value=1
        )
        yield from _gauges(snapshot, self.clock())
        yield from _counters(snapshot.counters)
        buckets, _count, total = snapshot.poll_latency
        yield HistogramMetricFamily(
            "watcher_poll_duration_seconds",
            "Time one poll spent reading the payment from Voltage (retries included)",
            buckets=buckets,
            sum_value=total,
        )

    def _read(self) -> Snapshot:
        rt = self.runtime
        return Snapshot(
            payments=rt.payments.history.counts(),
            deliveries=rt.deliveries.history.counts(),
            subscriptions=rt.subscriptions.count(),
            counters=rt.payments.counters(),
            fallback=rt.list_health.in_fallback(),
            poll_latency=rt.payments.latency_histogram("poll"),
        )


def _gauges(snap: Snapshot, now: float) -> Iterable[Metric]:
    payments, deliveries = snap.payments, snap.deliveries
    yield GaugeMetricFamily(
        "watcher_pending_payments", "Payments on the poll schedule", value=payments.pending
    )
    yield GaugeMetricFamily(
        "watcher_watched_payments", "Payments ever watched (kept)", value=payments.watched
    )
    yield GaugeMetricFamily(
        "watcher_subscriptions", "Webhook subscriptions", value=snap.subscriptions
    )
    depth = GaugeMetricFamily(
        "watcher_delivery_queue_depth",
        "Deliveries scheduled (due or leased), by queue",
        labels=["queue"],
    )
    depth.add_metric(["first_attempt"], deliveries.first_attempt)
    depth.add_metric(["retry"], deliveries.retry)
    yield depth
    overdue = GaugeMetricFamily(
        "watcher_oldest_overdue_seconds",
        "How long the most overdue item of each schedule has been due (0 if none)",
        labels=["schedule"],
    )
    due = {
        "poll": payments.next_poll_at,
        "first_attempt": deliveries.first_attempt_due,
        "retry": deliveries.retry_due,
    }
    for name, score in due.items():
        overdue.add_metric([name], max(0.0, now - score) if score is not None else 0.0)
    yield overdue
    yield GaugeMetricFamily(
        "watcher_outbox_events", "Events stored in the outbox stream", value=deliveries.events
    )
    yield GaugeMetricFamily(
        "watcher_outbox_unacknowledged",
        "Outbox events claimed by a fan-out but not acknowledged yet",
        value=deliveries.unacknowledged,
    )
    yield GaugeMetricFamily(
        "watcher_detection_fallback",
        "1 while list calls fail and pending payments are polled one by one instead",
        value=1 if snap.fallback else 0,
    )


def _counters(counters: dict[str, int]) -> Iterable[Metric]:
    """The counters hash as Prometheus counters: labelled families by prefix, plain ones by
    name (at 0 until counted), and the rest under `watcher_counter{name=...}`."""
    families = {
        prefix: CounterMetricFamily(name, doc, labels=[label])
        for prefix, (name, label, doc) in _LABELLED.items()
    }
    other = CounterMetricFamily(
        "watcher_counter", "Other counters the watcher keeps", labels=["name"]
    )
    counters = dict(counters)
    for prefix, labels in _ALWAYS.items():
        for label in labels:
            counters.setdefault(f"{prefix}:{label}", 0)
    for key, value in sorted(counters.items()):
        prefix, sep, rest = key.partition(":")
        if sep and prefix in families:
            families[prefix].add_metric([rest], value)
        elif key in _PLAIN:
            name, doc = _PLAIN[key]
            yield CounterMetricFamily(name, doc, value=value)
        else:
            other.add_metric([key], value)
    for key, (name, doc) in _PLAIN.items():
        if key not in counters:
            yield CounterMetricFamily(name, doc, value=0)
    yield from families.values()
    yield CounterMetricFamily(
        "watcher_dead_letters",
        "Deliveries dead-lettered (out of attempts, or their subscription is gone)",
        value=counters.get("deliveries:dead", 0),
    )
    yield other


def build_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WatcherCollector(runtime))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
