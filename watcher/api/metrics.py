"""Prometheus metrics, read from Redis at scrape time.

Every number lives in Redis already (schedules, counters, the outbox), written by whichever
worker did the work, so a custom collector reads them when Prometheus scrapes instead of each
process keeping its own partial counts. Scraping costs one pipelined round trip.

Not exported: a poll-latency histogram (polls are timed nowhere yet) and a gauge of current
dead letters (`watcher_dead_letters_total` counts dead-letterings; re-sent ones are not
subtracted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

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
        yield from self._metrics(snapshot)

    def _read(self) -> dict[str, Any]:
        rt = self.runtime
        keys = rt.store.keys
        pipe = rt.redis.pipeline(transaction=False)
        pipe.zcard(keys.poll_schedule)
        pipe.zcard(keys.payments_index)
        pipe.zcard(keys.subscriptions_index)
        pipe.zcard(keys.deliver_schedule)
        pipe.zcard(keys.retry_schedule)
        pipe.zrange(keys.poll_schedule, 0, 0, withscores=True)
        pipe.zrange(keys.deliver_schedule, 0, 0, withscores=True)
        pipe.zrange(keys.retry_schedule, 0, 0, withscores=True)
        pipe.hgetall(keys.counters)
        pipe.xlen(keys.outbox)
        pipe.hget(keys.list_health, "fallback_since")
        answers = pipe.execute()
        pending_fanout = 0
        try:
            info: Any = rt.redis.xpending(keys.outbox, keys.OUTBOX_GROUP)
            pending_fanout = int(info.get("pending", 0))
        except redis.ResponseError:
            pending_fanout = 0  # no stream or no group yet: nothing pending
        return {
            "pending": int(answers[0]),
            "watched": int(answers[1]),
            "subscriptions": int(answers[2]),
            "first_attempt": int(answers[3]),
            "retry": int(answers[4]),
            "oldest": {
                "poll": _score(answers[5]),
                "first_attempt": _score(answers[6]),
                "retry": _score(answers[7]),
            },
            "counters": {k: int(v) for k, v in cast(dict[str, str], answers[8]).items()},
            "outbox": int(answers[9]),
            "unacknowledged": pending_fanout,
            "fallback": bool(answers[10]) or not rt.list_health.sweeps_enabled,
        }

    def _metrics(self, snap: dict[str, Any]) -> Iterable[Metric]:
        now = self.clock()
        yield GaugeMetricFamily(
            "watcher_pending_payments", "Payments on the poll schedule", value=snap["pending"]
        )
        yield GaugeMetricFamily(
            "watcher_watched_payments", "Payments ever watched (kept)", value=snap["watched"]
        )
        yield GaugeMetricFamily(
            "watcher_subscriptions", "Webhook subscriptions", value=snap["subscriptions"]
        )
        depth = GaugeMetricFamily(
            "watcher_delivery_queue_depth",
            "Deliveries scheduled (due or leased), by queue",
            labels=["queue"],
        )
        depth.add_metric(["first_attempt"], snap["first_attempt"])
        depth.add_metric(["retry"], snap["retry"])
        yield depth
        overdue = GaugeMetricFamily(
            "watcher_oldest_overdue_seconds",
            "How long the most overdue item of each schedule has been due (0 if none)",
            labels=["schedule"],
        )
        for name, score in snap["oldest"].items():
            overdue.add_metric([name], max(0.0, now - score) if score is not None else 0.0)
        yield overdue
        yield GaugeMetricFamily(
            "watcher_outbox_events", "Events stored in the outbox stream", value=snap["outbox"]
        )
        yield GaugeMetricFamily(
            "watcher_outbox_unacknowledged",
            "Outbox events claimed by a fan-out but not acknowledged yet",
            value=snap["unacknowledged"],
        )
        yield GaugeMetricFamily(
            "watcher_detection_fallback",
            "1 while list calls fail and pending payments are polled one by one instead",
            value=1 if snap["fallback"] else 0,
        )

        counters: dict[str, int] = snap["counters"]
        families: dict[str, CounterMetricFamily] = {}
        for prefix, (name, label, doc) in _LABELLED.items():
            families[prefix] = CounterMetricFamily(name, doc, labels=[label])
        other = CounterMetricFamily(
            "watcher_counter", "Other counters the watcher keeps", labels=["name"]
        )
        plain_seen: set[str] = set()
        for prefix, labels in _ALWAYS.items():
            for label in labels:
                counters.setdefault(f"{prefix}:{label}", 0)
        for key, value in sorted(counters.items()):
            prefix, sep, rest = key.partition(":")
            if sep and prefix in families:
                families[prefix].add_metric([rest], value)
            elif key in _PLAIN:
                name, doc = _PLAIN[key]
                plain_seen.add(key)
                yield CounterMetricFamily(name, doc, value=value)
            else:
                other.add_metric([key], value)
        for key, (name, doc) in _PLAIN.items():
            if key not in plain_seen:
                yield CounterMetricFamily(name, doc, value=0)
        yield from families.values()
        yield CounterMetricFamily(
            "watcher_dead_letters",
            "Deliveries dead-lettered (out of attempts, or their subscription is gone)",
            value=counters.get("deliveries:dead", 0),
        )
        yield other
        buckets, _count, total = self.runtime.store.latency_histogram("poll")
        yield HistogramMetricFamily(
            "watcher_poll_duration_seconds",
            "Time one poll spent reading the payment from Voltage (retries included)",
            buckets=buckets,
            sum_value=total,
        )


def _score(pairs: Any) -> float | None:
    items = cast(list[tuple[str, float]], pairs)
    return float(items[0][1]) if items else None


def build_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WatcherCollector(runtime))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
