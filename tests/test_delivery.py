"""Delivery on a real Redis to real HTTP receivers, without Celery: fan-out, attempts,
retries, dead letters, 410, re-sends, hostile answers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from watcher.delivery.attempts import DeliveryPolicy, attempt_delivery
from watcher.delivery.guarded_http import guarded_session
from watcher.delivery.recovery import Selection, recover
from watcher.delivery.store import DEAD, FAILED, PENDING, SUCCEEDED, DeliveryStore
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.receiver import Answer, Receiver
from watcher.redis_server import free_port
from watcher.voltage.models import Payment

POLICY = DeliveryPolicy(
    retry_schedule=(0.0, 10.0, 20.0),
    connect_timeout=1.0,
    timeout=1.0,
    max_in_flight=2,
    retry_after_max=600.0,
    disable_after=3600.0,
    lease=30.0,
    jitter=0.0,
)


@dataclass
class World:
    payments: PaymentStore
    subs: SubscriptionStore
    deliveries: DeliveryStore

    def emit(self, status: str = "completed", **payment: object) -> str:
        """Adopt an already final payment: the simplest way to put one event in the outbox."""
        payment_id = str(uuid.uuid4())
        raw = {"id": payment_id, "status": status, "wallet_id": "w1", **payment}
        self.payments.adopt(
            Payment.from_api(raw), source="watched", now=time.time(), first_poll_at=0
        )
        record = self.payments.get(payment_id)
        assert record is not None
        assert record.event_id is not None
        return record.event_id


@pytest.fixture
def world(redis_client: redis.Redis) -> World:
    keys = Keys(f"d{uuid.uuid4().hex[:8]}")
    subs = SubscriptionStore(redis_client, keys, allow_private=True)
    return World(PaymentStore(redis_client, keys), subs, DeliveryStore(redis_client, keys, subs))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


SESSION = guarded_session(allow_private=True)


def deliver_once(world: World, delivery_id: str, now: float | None = None) -> str:
    return attempt_delivery(
        world.deliveries, SESSION, POLICY, delivery_id, time.time() if now is None else now
    )


def test_fan_out_makes_one_delivery_per_matching_subscription(world: World) -> None:
    shop, _ = world.subs.create(url="http://127.0.0.1:1/a", event_types=["payment.completed"])
    audit, _ = world.subs.create(url="http://127.0.0.1:1/b")
    world.subs.create(url="http://127.0.0.1:1/c", event_types=["payment.expired"])
    off, _ = world.subs.create(url="http://127.0.0.1:1/d")
    world.subs.update(off.id, enabled=False)
    event_id = world.emit("completed")
    assert world.deliveries.fan_out_new("c1", time.time()) == 2
    # Fan-out is idempotent: replaying the entry makes nothing new.
    event = world.deliveries.event(world.payments.outbox_events()[0]["entry_id"])
    assert event is not None
    assert world.deliveries.fan_out(event, time.time()) == []
    made = {world.deliveries.get(d).subscription_id for d in world.deliveries.list_ids()}  # type: ignore[union-attr]
    assert made == {shop.id, audit.id}
    assert all(
        world.deliveries.get(d).event_id == event_id  # type: ignore[union-attr]
        for d in world.deliveries.list_ids()
    )
    assert world.deliveries.unacknowledged() == 0


def test_interrupted_fan_out_is_repaired_without_a_second_delivery(world: World) -> None:
    world.subs.create(url="http://127.0.0.1:1/a")
    world.emit()
    keys = world.deliveries.keys
    world.deliveries.ensure_group()
    # A fan-out reads the entry and dies before storing anything or acknowledging it.
    world.deliveries.redis.xreadgroup(keys.OUTBOX_GROUP, "crashed", {keys.outbox: ">"}, count=10)
    assert world.deliveries.unacknowledged() == 1
    assert world.deliveries.fan_out_new("c2", time.time()) == 0
    assert world.deliveries.repair_fan_out("c2", time.time(), min_idle_ms=0) == 1
    assert world.deliveries.repair_fan_out("c2", time.time(), min_idle_ms=0) == 0
    assert world.deliveries.unacknowledged() == 0
    assert len(world.deliveries.list_ids()) == 1


def test_signed_delivery_verifies_with_the_official_library(
    world: World, receiver: Receiver
) -> None:
    sub, secret = world.subs.create(url=receiver.url())
    event_id = world.emit("completed", metadata={"order": "7"})
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    assert deliver_once(world, delivery_id) == SUCCEEDED
    (got,) = receiver.received
    assert got.headers["webhook-id"] == event_id
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("voltage-watcher/")
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "payment.completed"
    assert payload["data"]["payment"]["metadata"] == {"order": "7"}
    delivery = world.deliveries.get(delivery_id, with_attempts=True)
    assert delivery is not None
    assert delivery.status == SUCCEEDED
    assert delivery.attempt_log[0]["status_code"] == 200
    assert sub.id == delivery.subscription_id


def test_failures_retry_on_the_schedule_then_dead_letter_then_redeliver(
    world: World, receiver: Receiver
) -> None:
    world.subs.create(url=receiver.url())
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    keys = world.deliveries.keys
    receiver.answer(500, Answer(status=503, body=b"busy"), 404)
    now = time.time()
    assert deliver_once(world, delivery_id, now) == FAILED
    assert world.deliveries.redis.zscore(keys.retry_schedule, delivery_id) == pytest.approx(
        now + 10
    )
    assert deliver_once(world, delivery_id, now + 10) == FAILED
    assert deliver_once(world, delivery_id, now + 30) == DEAD
    dead = world.deliveries.get(delivery_id, with_attempts=True)
    assert dead is not None
    assert [a["status_code"] for a in dead.attempt_log] == [500, 503, 404]
    assert dead.attempt_log[1]["response_body"] == "busy"
    assert all(a["latency_ms"] >= 0 for a in dead.attempt_log)
    assert world.deliveries.redis.zscore(keys.retry_schedule, delivery_id) is None

    again = world.deliveries.redeliver(delivery_id, now + 40)
    assert again is not None
    assert again.status == PENDING
    assert deliver_once(world, delivery_id, now + 40) == SUCCEEDED
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1  # every attempt and the re-send carry the same webhook-id


def test_retry_after_is_honoured_within_bounds(world: World, receiver: Receiver) -> None:
    world.subs.create(url=receiver.url())
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    receiver.answer(
        Answer(status=429, headers={"Retry-After": "120"}),
        Answer(status=429, headers={"Retry-After": "99999"}),
    )
    now = time.time()
    deliver_once(world, delivery_id, now)
    keys = world.deliveries.keys
    assert world.deliveries.redis.zscore(keys.retry_schedule, delivery_id) == pytest.approx(
        now + 120
    )
    deliver_once(world, delivery_id, now + 120)
    assert world.deliveries.redis.zscore(keys.retry_schedule, delivery_id) == pytest.approx(
        now + 120 + 600
    )


def test_410_gone_disables_the_subscription(world: World, receiver: Receiver) -> None:
    sub, _ = world.subs.create(url=receiver.url())
    world.emit()
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    first, second = world.deliveries.list_ids(newest_first=False)
    receiver.answer(410)
    assert deliver_once(world, first) == DEAD
    disabled = world.subs.get(sub.id)
    assert not disabled.enabled
    assert disabled.disabled_reason == "the endpoint answered 410 Gone"
    # Later deliveries to it are dead-lettered without a request; `recover` can re-send them.
    assert deliver_once(world, second) == "dropped"
    dropped = world.deliveries.get(second)
    assert dropped is not None
    assert dropped.status == DEAD
    assert len(receiver.received) == 1


def test_a_subscription_failing_for_too_long_is_disabled(world: World, receiver: Receiver) -> None:
    sub, _ = world.subs.create(url=receiver.url())
    receiver.default = Answer(status=500)
    for _ in range(2):
        world.emit()
    world.deliveries.fan_out_new("c", time.time())
    first, second = world.deliveries.list_ids(newest_first=False)
    now = time.time()
    deliver_once(world, first, now)
    assert world.subs.get(sub.id).enabled
    deliver_once(world, second, now + 3601)
    disabled = world.subs.get(sub.id)
    assert not disabled.enabled
    assert disabled.disabled_reason is not None
    assert disabled.disabled_reason.startswith("failing without a success since")


def test_recover_resends_failed_and_dead_deliveries_in_a_range(
    world: World, receiver: Receiver
) -> None:
    sub, _ = world.subs.create(url=receiver.url())
    receiver.default = Answer(status=500)
    for _ in range(3):
        world.emit()
    world.deliveries.fan_out_new("c", time.time())
    ids = world.deliveries.list_ids(newest_first=False)
    for delivery_id in ids:
        deliver_once(world, delivery_id)
    receiver.default = Answer(status=200)
    every = Selection(since=0, until=time.time() + 1)
    counted = recover(world.deliveries, sub.id, every, time.time(), dry_run=True)
    assert sorted(counted.delivery_ids) == sorted(ids)
    assert counted.by_status == {"failed": 3}
    assert all(d.status == "failed" for d in world.deliveries.get_many(ids) if d)  # untouched
    only_dead = Selection(since=0, until=time.time() + 1, statuses=("dead",))
    assert (
        recover(world.deliveries, sub.id, only_dead, time.time(), dry_run=False).delivery_ids == []
    )
    other_type = Selection(since=0, until=time.time() + 1, event_types=("payment.expired",))
    assert (
        recover(world.deliveries, sub.id, other_type, time.time(), dry_run=False).delivery_ids == []
    )
    chosen = recover(world.deliveries, sub.id, every, time.time(), dry_run=False).delivery_ids
    assert sorted(chosen) == sorted(ids)
    for delivery_id in chosen:
        assert deliver_once(world, delivery_id) == SUCCEEDED
    assert recover(world.deliveries, sub.id, every, time.time(), dry_run=False).delivery_ids == []


def test_in_flight_cap_postpones_without_counting_an_attempt(world: World) -> None:
    sub, _ = world.subs.create(url="http://127.0.0.1:1/a")
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    now = time.time()
    assert world.deliveries.acquire_slot(sub.id, "other-1", now, 30, 2)
    assert world.deliveries.acquire_slot(sub.id, "other-2", now, 30, 2)
    assert deliver_once(world, delivery_id, now) == "postponed"
    delivery = world.deliveries.get(delivery_id)
    assert delivery is not None
    assert delivery.attempts == 0
    # Slots are leases: a worker that died holding one gives it back when the lease ends.
    assert world.deliveries.acquire_slot(sub.id, delivery_id, now + 31, 30, 2)


@pytest.mark.parametrize(
    ("answer", "expect_error"),
    [
        (Answer(status=200, body=b"z" * 5_000_000), None),
        (Answer(status=200, stream_forever=True), None),
        (Answer(status=200, drip=0.2), "deadline"),
        (Answer(status=500, body=b"\xff\xfe\xfa bad utf-8 \xc3\x28"), None),
        (Answer(status=200, delay=5), "timed out"),
    ],
    ids=["huge-body", "endless-stream", "slow-drip", "invalid-utf8", "hang"],
)
def test_hostile_answers_are_bounded(
    world: World, receiver: Receiver, answer: Answer, expect_error: str | None
) -> None:
    world.subs.create(url=receiver.url())
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    receiver.answer(answer)
    started = time.monotonic()
    deliver_once(world, delivery_id)
    assert time.monotonic() - started < 5
    delivery = world.deliveries.get(delivery_id, with_attempts=True)
    assert delivery is not None
    (attempt,) = delivery.attempt_log
    assert len(attempt["response_body"]) <= 1024
    json.dumps(attempt)  # stored excerpts are always valid text
    if expect_error:
        assert expect_error in (attempt["error"] or "")


def test_a_refused_connection_is_described_for_a_person(world: World) -> None:
    """Issue 13: last_error was urllib3's "_GuardedHTTPConnectionPool(...): Max retries
    exceeded with url: /hook?token=..." chain, path and query included."""
    port = free_port()  # nothing listens there
    world.subs.create(url=f"http://127.0.0.1:{port}/hook?token=s3cr3t")
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    deliver_once(world, delivery_id)
    delivery = world.deliveries.get(delivery_id, with_attempts=True)
    assert delivery is not None
    assert delivery.last_error == f"connection refused by 127.0.0.1:{port}"
    assert delivery.attempt_log[0]["error"] == delivery.last_error


def test_private_address_refused_at_send_time(world: World, redis_client: redis.Redis) -> None:
    world.subs.create(url="http://127.0.0.1:9/hook")
    world.emit()
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    strict = guarded_session(allow_private=False)
    attempt_delivery(world.deliveries, strict, POLICY, delivery_id, time.time())
    delivery = world.deliveries.get(delivery_id, with_attempts=True)
    assert delivery is not None
    assert delivery.attempt_log[0]["refused_by_ssrf_guard"] is True
    assert "loopback" in delivery.attempt_log[0]["error"]


def test_a_test_event_goes_to_its_subscription_only(world: World, receiver: Receiver) -> None:
    target, secret = world.subs.create(url=receiver.url())
    world.subs.create(url="http://127.0.0.1:1/other")
    event = world.deliveries.add_test_event(target.id)
    assert world.deliveries.fan_out_new("c", time.time()) == 1
    (delivery_id,) = world.deliveries.list_ids()
    assert deliver_once(world, delivery_id) == SUCCEEDED
    (got,) = receiver.received
    body = Webhook(secret).verify(got.body, got.headers)
    assert body["type"] == "webhook.test"
    assert got.headers["webhook-id"] == event.event_id


def test_chunks_group_one_subscriber_and_hand_back_the_rest_on_failure(
    world: World, receiver: Receiver
) -> None:
    from watcher.delivery.attempts import attempt_chunk, group_by_subscription

    failing, _ = world.subs.create(url=receiver.url("/failing"))
    world.subs.create(url="http://127.0.0.1:1/other")
    for _ in range(3):
        world.emit()
    world.deliveries.fan_out_new("c", time.time())
    keys = world.deliveries.keys
    claimed = world.deliveries.claim_due(keys.deliver_schedule, time.time(), 30, 100)
    grouped = group_by_subscription(world.deliveries, claimed, chunk_size=2)
    assert all(
        world.deliveries.get(d).subscription_id == g.subscription_id  # type: ignore[union-attr]
        for g in grouped
        for d in g.delivery_ids
    )
    chunks = [g.delivery_ids for g in grouped]
    owners = [{world.deliveries.get(d).subscription_id for d in c} for c in chunks]  # type: ignore[union-attr]
    assert all(len(o) == 1 for o in owners)
    assert sorted(len(c) for c in chunks) == [1, 1, 2, 2]

    chunk = next(
        c for c, o in zip(chunks, owners, strict=True) if o == {failing.id} and len(c) == 2
    )
    receiver.answer(500)
    assert attempt_chunk(world.deliveries, SESSION, POLICY, chunk, time.time) == [FAILED]
    # The other delivery in that chunk was not attempted: it is due again right away.
    score = world.deliveries.redis.zscore(keys.deliver_schedule, chunk[1])
    assert score is not None
    assert score <= time.time()
    assert world.deliveries.get(chunk[1]).attempts == 0  # type: ignore[union-attr]
    assert len(receiver.received) == 1
