"""Operational events: the watcher telling operators about its own deliveries, as webhooks to
the admin subscriptions that ask for them (Standard Webhooks says to tell consumers about
failures through another channel; this is that channel, signed like any event).

`subscription.disabled` when a subscription is disabled by a 410 or by failing too long,
`delivery.dead` when a delivery runs out of attempts, `subscription.recovered` when a
subscriber that was failing answers 2xx again. A notice about a notice is never sent, so a
broken operator endpoint cannot feed itself.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from watcher.delivery.records import Delivery
from watcher.delivery.subscription_checks import OPERATIONAL_EVENT_TYPES
from watcher.delivery.subscriptions import Subscription
from watcher.engine.records import EVENT_SCHEMA_VERSION, new_event_id
from watcher.logging import get_logger
from watcher.timing import iso_timestamp

log = get_logger(__name__)


class Outbox(Protocol):
    def add_notice(self, event_id: str, event_type: str, body: str) -> None: ...


def _send(outbox: Outbox, event_type: str, data: dict[str, Any], now: float) -> None:
    body = {
        "type": event_type,
        "timestamp": iso_timestamp(now),
        "version": EVENT_SCHEMA_VERSION,
        "data": data,
    }
    try:
        outbox.add_notice(new_event_id(), event_type, json.dumps(body, separators=(",", ":")))
    except Exception:  # a notice must never undo the delivery work it reports on
        log.exception("operational event not stored", event_type=event_type)


def subscription_disabled(outbox: Outbox, sub: Subscription, reason: str, now: float) -> None:
    data = {"subscription_id": sub.id, "app_id": sub.app or None, "reason": reason,
            "disabled_at": iso_timestamp(now)}  # fmt: skip
    _send(outbox, "subscription.disabled", data, now)


def delivery_dead(outbox: Outbox, delivery: Delivery, attempt: dict[str, Any], now: float) -> None:
    if delivery.event_type in OPERATIONAL_EVENT_TYPES:
        return  # the notice about a notice that died would be the next one to die
    data = {
        "delivery_id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "app_id": delivery.app or None,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "payment_id": delivery.payment_id,
        "attempts": delivery.attempts + 1,
        "last_status_code": attempt.get("status_code"),
        "last_error": attempt.get("error"),
    }
    _send(outbox, "delivery.dead", data, now)


def subscription_recovered(
    outbox: Outbox, sub: Subscription, delivery: Delivery, failing_since: float, now: float
) -> None:
    if delivery.event_type in OPERATIONAL_EVENT_TYPES:
        return
    data = {
        "subscription_id": sub.id,
        "app_id": sub.app or None,
        "failing_since": iso_timestamp(failing_since),
        "recovered_at": iso_timestamp(now),
    }
    _send(outbox, "subscription.recovered", data, now)
