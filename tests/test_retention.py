"""Retention on a real Redis: old finished things go, anything still in flight stays."""

from __future__ import annotations

import time
import uuid

import redis

from watcher.delivery.retention import forget_old
from watcher.delivery.store import DeliveryStore
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.voltage.models import Payment

DAY = 86400.0


def stores(client: redis.Redis) -> tuple[PaymentStore, DeliveryStore]:
    keys = Keys(f"r{uuid.uuid4().hex[:8]}")
    subs = SubscriptionStore(client, keys, allow_private=True)
    return PaymentStore(client, keys), DeliveryStore(client, keys, subs)


def adopt(store: PaymentStore, status: str, at: float) -> str:
    payment_id = str(uuid.uuid4())
    store.adopt(
        Payment.from_api({"id": payment_id, "status": status}),
        source="watched",
        now=at,
        first_poll_at=at,
    )
    return payment_id


def test_old_final_payments_go_pending_and_recent_ones_stay(redis_client: redis.Redis) -> None:
    payments, deliveries = stores(redis_client)
    now = time.time()
    old_final = adopt(payments, "completed", now - 40 * DAY)
    old_pending = adopt(payments, "receiving", now - 40 * DAY)
    recent_final = adopt(payments, "expired", now - 1 * DAY)
    result = forget_old(payments, deliveries, now=now, retention=30 * DAY)
    assert result.payments == 1
    assert payments.get(old_final) is None
    assert payments.transitions(old_final) == []
    assert payments.get(old_pending) is not None
    assert payments.next_poll_at(old_pending) is not None
    assert payments.get(recent_final) is not None


def test_finished_deliveries_go_retrying_ones_stay(redis_client: redis.Redis) -> None:
    payments, deliveries = stores(redis_client)
    sub, _ = deliveries.subscriptions.create(url="http://127.0.0.1:1/hook")
    now = time.time()
    for _ in range(3):
        adopt(payments, "completed", now)
    deliveries.fan_out_new("c", now - 40 * DAY)
    dead, retrying, fresh = deliveries.list_ids(newest_first=False)
    client = deliveries.redis
    client.hset(
        deliveries.keys.delivery(dead),
        mapping={"status": "dead", "updated_at": repr(now - 35 * DAY)},
    )
    client.hset(
        deliveries.keys.delivery(retrying),
        mapping={"status": "failed", "updated_at": repr(now - 35 * DAY)},
    )
    client.hset(
        deliveries.keys.delivery(fresh),
        mapping={"status": "succeeded", "updated_at": repr(now - 1 * DAY)},
    )
    result = forget_old(payments, deliveries, now=now, retention=30 * DAY)
    assert result.deliveries == 1
    assert deliveries.get(dead) is None
    assert dead not in deliveries.list_ids(subscription_id=sub.id)
    assert deliveries.get(retrying) is not None
    assert deliveries.get(fresh) is not None


def test_outbox_is_trimmed_but_never_past_unfinished_fan_out(redis_client: redis.Redis) -> None:
    payments, deliveries = stores(redis_client)
    outbox = payments.keys.outbox
    old_ms = int((time.time() - 40 * DAY) * 1000)
    for i in range(3):
        redis_client.xadd(
            outbox,
            {"event_id": f"evt_{i}", "type": "payment.completed", "payment_id": "", "body": "{}"},
            id=f"{old_ms + i}-0",
        )
    deliveries.ensure_group()
    # Fan-out has read only the first old entry and not acknowledged it yet.
    redis_client.xreadgroup(payments.keys.OUTBOX_GROUP, "crashed", {outbox: ">"}, count=1)
    result = forget_old(payments, deliveries, now=time.time(), retention=30 * DAY)
    assert result.events == 0
    assert redis_client.xlen(outbox) == 3
    # Once fan-out has caught up, everything below the cutoff goes.
    deliveries.repair_fan_out("c", time.time(), min_idle_ms=0)
    deliveries.fan_out_new("c", time.time())
    result = forget_old(payments, deliveries, now=time.time(), retention=30 * DAY)
    assert result.events == 3
    assert redis_client.xlen(outbox) == 0
