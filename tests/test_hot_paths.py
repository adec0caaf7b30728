"""The hot paths' Redis budget (issue 14): an unchanged poll makes one round trip besides the
GET, a delivery attempt two; what they write stays what /metrics and the API read."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection

from tests.test_engine_store import NOW
from tests.test_engine_store import POLICY as ENGINE_POLICY
from watcher.celery import celery_config
from watcher.delivery.attempts import (
    AttemptOutcome,
    DeliveryPolicy,
    attempt_chunk,
    attempt_delivery,
)
from watcher.delivery.guarded_http import guarded_session
from watcher.delivery.store import DeliveryStore
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.engine.poller import PollResult, poll_record
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.receiver import Receiver
from watcher.settings import load_settings
from watcher.voltage.models import Payment
from watcher.voltage.purpose import Purpose

POLICY = dataclasses.replace(ENGINE_POLICY, steps=((3600.0, 30.0),))


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts packed sends to Redis: one per command or pipeline, i.e. one per round trip."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


class CountingReader:
    """Voltage answering the same status, counting its request as the runtime's hook does."""

    def __init__(self, store: PaymentStore, payment: Payment) -> None:
        self.store = store
        self.payment = payment

    def get_payment(self, payment_id: str, *, purpose: Purpose = Purpose.OTHER) -> Payment:
        self.store.count(f"voltage_requests:{purpose}")
        return self.payment


def watched(store: PaymentStore) -> Payment:
    raw = {"id": str(uuid.uuid4()), "status": "receiving", "updated_at": "2027-01-15T08:00:00Z"}
    payment = Payment.from_api(raw)
    assert store.adopt(payment, source="created", now=NOW, first_poll_at=NOW)
    return payment


def test_an_unchanged_poll_is_one_round_trip(
    redis_client: redis.Redis, round_trips: list[int]
) -> None:
    store = PaymentStore(redis_client, Keys(f"h{uuid.uuid4().hex[:8]}"))
    warm_up = watched(store)  # Redis loads a script on its first use: one more round trip
    poll_record(
        store, CountingReader(store, warm_up), POLICY, warm_up.id, store.get(warm_up.id), NOW
    )
    payment = watched(store)
    (record,) = store.get_many([payment.id])  # a task reads its chunk's records together
    assert record is not None
    reader = CountingReader(store, payment)
    before = round_trips[0]
    outcome = poll_record(store, reader, POLICY, payment.id, record, NOW + 1)
    assert round_trips[0] - before == 1
    assert outcome.outcome is PollResult.UNCHANGED
    counters = store.counters()
    assert counters["polls"] == 2
    assert counters["voltage_requests:read_back"] == 2
    _buckets, timed, _seconds = store.latency_histogram("poll")
    assert timed == 2
    stored = store.get(payment.id)
    assert stored is not None
    assert (stored.poll_count, stored.error_streak, stored.last_poll_at) == (1, 0, NOW + 1)
    assert store.next_poll_at(payment.id) == pytest.approx(NOW + 31)


def test_a_record_changed_since_it_was_read_is_not_written_over(
    redis_client: redis.Redis,
) -> None:
    store = PaymentStore(redis_client, Keys(f"h{uuid.uuid4().hex[:8]}"))
    payment = watched(store)
    early = store.get(payment.id)
    assert early is not None
    # Another worker saw it paid meanwhile.
    paid = Payment.from_api({**payment.raw, "status": "completed"})
    fresh = store.get(payment.id)
    assert fresh is not None
    store.transition(fresh, paid, now=NOW + 1)
    outcome = poll_record(store, CountingReader(store, payment), POLICY, payment.id, early, NOW + 2)
    assert outcome.outcome is PollResult.LOST_RACE
    stored = store.get(payment.id)
    assert stored is not None
    assert stored.status == "completed"
    assert stored.last_poll_at == NOW + 1  # the transition's, not the stale poll's
    assert store.next_poll_at(payment.id) is None
    assert store.counters()["polls"] == 1  # the read happened and is counted


def test_a_delivery_attempt_is_two_round_trips(
    redis_client: redis.Redis, round_trips: list[int]
) -> None:
    keys = Keys(f"h{uuid.uuid4().hex[:8]}")
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    deliveries = DeliveryStore(redis_client, keys, subs)
    payments = PaymentStore(redis_client, keys)
    for _ in range(3):
        raw = {"id": str(uuid.uuid4()), "status": "completed"}
        payments.adopt(Payment.from_api(raw), source="watched", now=time.time(), first_poll_at=0)
    policy = DeliveryPolicy((1.0,), 1.0, 2.0, 2, 60.0, 3600.0, 30.0)
    session = guarded_session(allow_private=True)
    with Receiver() as receiver:
        sub, _secret = subs.create(url=receiver.url())
        deliveries.fan_out_new("c", time.time())
        warm_up, delivery_id, recovering = deliveries.list_ids()
        # Redis loads a script on its first use: one more round trip.
        attempt_delivery(deliveries, session, policy, warm_up, time.time())
        before = round_trips[0]
        outcome = attempt_delivery(deliveries, session, policy, delivery_id, time.time())
        assert round_trips[0] - before == 2
        # A success after failures clears them in the same write; the one thing more is the
        # subscription.recovered notice (an XADD), once per recovery.
        subs.note_failure(sub.id, time.time() - 5)
        before = round_trips[0]
        attempt_delivery(deliveries, session, policy, recovering, time.time())
        assert round_trips[0] - before == 3
    assert outcome is AttemptOutcome.SUCCEEDED
    delivery = deliveries.get(delivery_id, with_attempts=True)
    assert delivery is not None
    assert (delivery.status, delivery.attempts, len(delivery.attempt_log)) == ("succeeded", 1, 1)
    assert payments.counters()["deliveries:succeeded"] == 3
    assert redis_client.zcard(keys.subscription_inflight(sub.id)) == 0  # the slot is back
    assert redis_client.hget(keys.subscription(sub.id), "failing_since") is None
    assert redis_client.zscore(keys.deliver_schedule, delivery_id) is None
    notices = [f for _, f in redis_client.xrange(keys.outbox) if f["type"].startswith("sub")]
    assert [n["type"] for n in notices] == ["subscription.recovered"]


def test_a_clean_chunk_costs_one_round_trip_per_delivery_and_one_more(
    redis_client: redis.Redis, round_trips: list[int]
) -> None:
    """The write after each success begins the chunk's next delivery in the same script."""
    keys = Keys(f"h{uuid.uuid4().hex[:8]}")
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    deliveries = DeliveryStore(redis_client, keys, subs)
    payments = PaymentStore(redis_client, keys)
    for _ in range(6):
        raw = {"id": str(uuid.uuid4()), "status": "completed"}
        payments.adopt(Payment.from_api(raw), source="watched", now=time.time(), first_poll_at=0)
    policy = DeliveryPolicy((1.0,), 1.0, 2.0, 1, 60.0, 3600.0, 30.0)  # one slot: handed on
    session = guarded_session(allow_private=True)
    with Receiver() as receiver:
        sub, _secret = subs.create(url=receiver.url())
        deliveries.fan_out_new("c", time.time())
        warm_up, *chunk = deliveries.list_ids(newest_first=False)
        attempt_delivery(deliveries, session, policy, warm_up, time.time())
        before = round_trips[0]
        outcomes = attempt_chunk(deliveries, session, policy, chunk, time.time)
        assert round_trips[0] - before == len(chunk) + 1
        assert [r.headers["webhook-id"] for r in receiver.received[1:]] == [
            d.event_id for d in deliveries.get_many(chunk) if d is not None
        ], "in order, each once"
    assert outcomes == [AttemptOutcome.SUCCEEDED] * len(chunk)
    assert payments.counters()["deliveries:succeeded"] == 6
    assert redis_client.zcard(keys.subscription_inflight(sub.id)) == 0
    assert all(redis_client.zscore(keys.deliver_schedule, d) is None for d in chunk)


def test_a_chunk_that_fails_midway_begins_nothing_more(redis_client: redis.Redis) -> None:
    keys = Keys(f"h{uuid.uuid4().hex[:8]}")
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    deliveries = DeliveryStore(redis_client, keys, subs)
    payments = PaymentStore(redis_client, keys)
    for _ in range(4):
        raw = {"id": str(uuid.uuid4()), "status": "completed"}
        payments.adopt(Payment.from_api(raw), source="watched", now=time.time(), first_poll_at=0)
    policy = DeliveryPolicy((60.0, 60.0), 1.0, 2.0, 2, 60.0, 3600.0, 30.0)
    session = guarded_session(allow_private=True)
    with Receiver() as receiver:
        sub, _secret = subs.create(url=receiver.url())
        deliveries.fan_out_new("c", time.time())
        chunk = deliveries.list_ids(newest_first=False)
        receiver.answer(200)
        receiver.answer(503)  # the second answer fails
        outcomes = attempt_chunk(deliveries, session, policy, chunk, time.time)
        assert len(receiver.received) == 2
    assert outcomes == [AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED]
    assert redis_client.zcard(keys.subscription_inflight(sub.id)) == 0, "no slot left held"
    rest = [deliveries.get(d) for d in chunk[2:]]
    assert [d.status if d else None for d in rest] == ["pending", "pending"]
    assert all(
        (score := redis_client.zscore(keys.deliver_schedule, d)) is not None
        and score <= time.time()
        for d in chunk[2:]
    ), "the rest are due again, not claimed"


@pytest.mark.parametrize(("auth", "events"), [(None, False), ("ops:flower-password-1", True)])
def test_task_events_only_when_flower_can_run(auth: str | None, events: bool) -> None:
    """Flower needs WATCHER_FLOWER_BASIC_AUTH, shared by every process of a deployment."""
    extra = {} if auth is None else {"watcher_flower_basic_auth": auth}
    config = celery_config(load_settings(_env_file=None, **extra))
    assert config["worker_send_task_events"] is events
    assert config["task_send_sent_event"] is events
