"""A delivery is never POSTed by two threads at once, and an attempt gives back what it took,
whatever happens to its write (review of issue 14's chunk changes)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from watcher.delivery.attempt_store import Begin
from watcher.delivery.attempts import AttemptOutcome, DeliveryPolicy, attempt_chunk
from watcher.delivery.guarded_http import guarded_session
from watcher.delivery.store import DeliveryStore
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.receiver import Answer, Received, Receiver
from watcher.voltage.models import Payment

# retry schedule, connect timeout, timeout, slots, retry-after max, disable after, lease
POLICY = DeliveryPolicy((60.0,), 1.0, 2.0, 4, 60.0, 3600.0, 30.0)


class World:
    def __init__(self, client: redis.Redis, payments: int) -> None:
        self.redis = client
        self.keys = Keys(f"l{uuid.uuid4().hex[:8]}")
        self.subs = SubscriptionStore(client, self.keys, allow_private=True)
        self.deliveries = DeliveryStore(client, self.keys, self.subs)
        store = PaymentStore(client, self.keys)
        for _ in range(payments):
            raw = {"id": str(uuid.uuid4()), "status": "completed"}
            store.adopt(Payment.from_api(raw), source="watched", now=time.time(), first_poll_at=0)

    def inflight(self, sub_id: str) -> list[str]:
        return [str(m) for m in self.redis.zrange(self.keys.subscription_inflight(sub_id), 0, -1)]


def test_a_delivery_under_way_is_not_begun_again(redis_client: redis.Redis) -> None:
    """A claim that ran out lets a second thread claim a delivery still being POSTed: its
    begin must not hand it a second slot (the first POST may still succeed)."""
    world = World(redis_client, 1)
    sub, _secret = world.subs.create(url="http://127.0.0.1:9/hook")
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    now = time.time()
    first = world.deliveries.attempts.begin(delivery_id, now, POLICY.slot)
    assert first.outcome is Begin.ACQUIRED
    second = world.deliveries.attempts.begin(delivery_id, now + 1, POLICY.slot)
    assert second.outcome is Begin.POSTPONED
    assert world.inflight(sub.id) == [delivery_id]


def test_beginning_an_attempt_renews_its_claim(redis_client: redis.Redis) -> None:
    """A chunk's later deliveries are begun long after the tick claimed them: the claim runs
    from the begin, so no tick re-claims a delivery whose POST is under way."""
    world = World(redis_client, 1)
    world.subs.create(url="http://127.0.0.1:9/hook")
    world.deliveries.fan_out_new("c", time.time())
    (delivery_id,) = world.deliveries.list_ids()
    now = time.time() + 100
    world.deliveries.attempts.begin(delivery_id, now, POLICY.slot)
    score = redis_client.zscore(world.keys.deliver_schedule, delivery_id)
    assert score == pytest.approx(now + POLICY.lease, abs=1e-3)


def test_a_postponed_resend_waits_on_its_own_schedule(redis_client: redis.Redis) -> None:
    """A manual re-send of a delivery already attempted sits on the first-attempt schedule;
    no free slot must put it off there, not on the retry schedule it is not on."""
    world = World(redis_client, 2)
    sub, _secret = world.subs.create(url="http://127.0.0.1:9/hook")
    world.deliveries.fan_out_new("c", time.time())
    busy, resent = world.deliveries.list_ids()
    now = time.time()
    one_slot = DeliveryPolicy((60.0,), 1.0, 2.0, 1, 60.0, 3600.0, 30.0).slot
    assert world.deliveries.attempts.begin(resent, now, one_slot).outcome is Begin.ACQUIRED
    world.deliveries.release_slot(sub.id, resent)
    redis_client.hset(world.keys.delivery(resent), "attempts", 1)
    world.deliveries.redeliver(resent, now)
    assert world.deliveries.attempts.begin(busy, now, one_slot).outcome is Begin.ACQUIRED
    redis_client.zadd(world.keys.deliver_schedule, {resent: now + 500})  # claimed
    assert world.deliveries.attempts.begin(resent, now, one_slot).outcome is Begin.POSTPONED
    score = redis_client.zscore(world.keys.deliver_schedule, resent)
    assert score == pytest.approx(now + one_slot.postpone, abs=1e-3)


class SlowClock:
    """A clock that the subscriber moves past the chunk's deadline while it answers."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_chunk_begins_nothing_after_its_deadline(redis_client: redis.Redis) -> None:
    """Whether the next delivery is begun is decided when the POST before it is done: a slow
    answer that took the chunk past its deadline hands the rest back instead."""
    world = World(redis_client, 3)
    clock = SlowClock()

    class Slow(Receiver):
        def respond(self, got: Received) -> Answer:
            clock.now += POLICY.lease
            return super().respond(got)

    with Slow() as receiver:
        sub, _secret = world.subs.create(url=receiver.url())
        world.deliveries.fan_out_new("c", time.time())
        chunk = world.deliveries.list_ids(newest_first=False)
        outcomes = attempt_chunk(world.deliveries, guarded_session(allow_private=True),
                                 POLICY, chunk, clock)  # fmt: skip
        assert len(receiver.received) == 1
    assert outcomes == [AttemptOutcome.SUCCEEDED]
    assert world.inflight(sub.id) == []
    assert all(
        redis_client.zscore(world.keys.deliver_schedule, d) == pytest.approx(clock.now, abs=1e-3)
        for d in chunk[1:]
    ), "the rest are handed back, due now"


def test_a_write_that_fails_gives_back_every_slot(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(redis_client, 2)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away mid-chunk")

    with Receiver() as receiver:
        sub, _secret = world.subs.create(url=receiver.url())
        world.deliveries.fan_out_new("c", time.time())
        chunk = world.deliveries.list_ids(newest_first=False)
        monkeypatch.setattr(world.deliveries.attempts, "finish", broken)
        with pytest.raises(redis.ConnectionError):
            attempt_chunk(world.deliveries, guarded_session(allow_private=True), POLICY, chunk,
                          time.time)  # fmt: skip
        assert len(receiver.received) == 1
    assert world.inflight(sub.id) == []
