"""Getting due deliveries to threads (issue 14): a tick sends a subscriber no more chunks than
it has room for, holds back without hiding anyone else, and a thread that ends a clean chunk
takes the next due ones itself. Real Redis, real receivers, no Celery."""

from __future__ import annotations

import threading
import time
import uuid

import redis

from tests.support import wait_until
from tests.test_delivery import POLICY, SESSION, World
from watcher.delivery.attempts import Chunk, attempt_chunk, ran_clean
from watcher.delivery.dispatch import DispatchLimits, DueChunks, dispatch_due_deliveries
from watcher.delivery.engine import DeliveryEngine
from watcher.delivery.store import DeliveryStore
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.receiver import Receiver


def make_world(client: redis.Redis) -> World:
    keys = Keys(f"dd{uuid.uuid4().hex[:8]}")
    subs = SubscriptionStore(client, keys, allow_private=True)
    return World(PaymentStore(client, keys), subs, DeliveryStore(client, keys, subs))


def backlog(world: World, wallet: str, url: str, n: int) -> str:
    sub, _ = world.subs.create(url=url, wallet_id=wallet)
    for _ in range(n):
        world.emit(wallet_id=wallet)
    while world.deliveries.fan_out_new("c", time.time(), count=500):
        pass
    return sub.id


def claim_first(world: World) -> list[str]:
    return world.deliveries.claim_due(world.deliveries.keys.deliver_schedule, time.time(), 30, 10)


def due_now(world: World, delivery_ids: list[str]) -> bool:
    keys, now = world.deliveries.keys, time.time()
    scores = [world.deliveries.redis.zscore(keys.deliver_schedule, d) for d in delivery_ids]
    return all(score is not None and score <= now for score in scores)


def test_a_tick_sends_a_subscriber_only_the_chunks_it_has_room_for(
    redis_client: redis.Redis,
) -> None:
    world = make_world(redis_client)
    busy = backlog(world, "w-busy", "http://127.0.0.1:1/busy", 50)
    other = backlog(world, "w-other", "http://127.0.0.1:1/other", 3)
    # One attempt of the busy subscriber is under way: a cap of 2 leaves room for one chunk.
    assert world.deliveries.acquire_slot(busy, "running", time.time(), 30, 2)
    limits = DispatchLimits(lease=30, batch=1000, chunk_size=10, max_in_flight=2)
    sent: list[Chunk] = []

    count = dispatch_due_deliveries(
        world.deliveries, limits, time.time(), lambda c, _r: sent.append(c)
    )

    assert sorted((c.subscription_id, len(c.delivery_ids)) for c in sent) == sorted(
        [(busy, 10), (other, 3)]
    )
    assert count == 13
    sent_ids = {d for c in sent for d in c.delivery_ids}
    held = [
        d for d in world.deliveries.list_ids(subscription_id=busy, limit=100) if d not in sent_ids
    ]
    assert len(held) == 40
    assert due_now(world, held), "what a subscriber has no room for is due again at once"


def test_a_held_back_backlog_bigger_than_a_batch_hides_no_one(redis_client: redis.Redis) -> None:
    world = make_world(redis_client)
    busy = backlog(world, "w-busy", "http://127.0.0.1:1/busy", 30)
    other = backlog(world, "w-other", "http://127.0.0.1:1/other", 1)  # due after all 30
    assert world.deliveries.acquire_slot(busy, "running", time.time(), 30, 1)
    limits = DispatchLimits(lease=30, batch=10, chunk_size=10, max_in_flight=1)
    sent: list[Chunk] = []

    dispatch_due_deliveries(world.deliveries, limits, time.time(), lambda c, _r: sent.append(c))

    assert [c.subscription_id for c in sent] == [other]


def test_a_thread_with_a_clean_chunk_drains_the_backlog_itself(
    redis_client: redis.Redis,
) -> None:
    world = make_world(redis_client)
    with Receiver() as receiver:
        sub_id = backlog(world, "w-shop", receiver.url("/shop"), 60)
        limits = DispatchLimits(lease=30, batch=1000, chunk_size=10, max_in_flight=2)
        runs: list[int] = []
        lock = threading.Lock()

        def run(ids: list[str]) -> bool:
            with lock:
                runs.append(len(ids))
            outcomes = attempt_chunk(world.deliveries, SESSION, POLICY, ids, time.time)
            return ran_clean(ids, outcomes)

        engine = DeliveryEngine(4, run, refill=DueChunks(world.deliveries, limits, time.time))
        try:
            first = claim_first(world)
            assert engine.offer(sub_id, first).admitted
            wait_until(lambda: len(receiver.received) == 60, message="the backlog to drain")
            wait_until(lambda: not engine.running(), message="the thread to end")
        finally:
            engine.shutdown()
    assert runs == [10] * 6, "one offer, then the thread took every next chunk itself"
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 60
    assert claim_first(world) == []


def test_a_thread_whose_subscriber_fails_takes_no_more(redis_client: redis.Redis) -> None:
    world = make_world(redis_client)
    with Receiver() as receiver:
        receiver.answer(500)
        sub_id = backlog(world, "w-down", receiver.url("/down"), 30)
        limits = DispatchLimits(lease=30, batch=1000, chunk_size=10, max_in_flight=2)

        def run(ids: list[str]) -> bool:
            return ran_clean(ids, attempt_chunk(world.deliveries, SESSION, POLICY, ids, time.time))

        engine = DeliveryEngine(4, run, refill=DueChunks(world.deliveries, limits, time.time))
        try:
            first = claim_first(world)
            assert engine.offer(sub_id, first).admitted
            wait_until(lambda: not engine.running(), message="the failed chunk to end")
        finally:
            engine.shutdown()
        assert len(receiver.received) == 1, "the first failure stopped the chunk and the thread"
