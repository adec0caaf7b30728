"""WATCHER_REDIS_MIN_REPLICAS: a new watch or subscription is confirmed only once a replica
holds it, so a Sentinel failover (asynchronous replication) cannot forget it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import wait_until
from tests.test_engine_store import voltage_payment
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.durability import Durability, NotReplicated
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.redis_server import RedisServer


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(
        tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(master.port)]
    ).start()
    client = redis.Redis(port=master.port, decode_responses=True)
    wait_until(
        lambda: (client.info("replication").get("slave0") or {}).get("state") == "online",
        message="the replica to be in sync",
    )
    try:
        yield master, replica
    finally:
        client.close()
        replica.stop()
        master.stop()


def test_a_watch_waits_for_the_replica_and_is_refused_without_one(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    client = redis.Redis(port=master.port, decode_responses=True)
    keys = Keys(f"d{uuid.uuid4().hex[:8]}")
    # Generous: a loaded CI machine, not the replica, decides how long the first WAIT takes.
    patient = PaymentStore(client, keys, durability=Durability(replicas=1, timeout_ms=10_000))
    held = voltage_payment(str(uuid.uuid4()), "receiving")
    assert patient.adopt(held, source="test", now=1.0, first_poll_at=1.0)
    # Confirmed means the replica has it, whatever happens to the master now.
    copy = redis.Redis(port=replica.port, decode_responses=True)
    assert copy.hget(keys.payment(held.id), "status") == "receiving"

    replica.stop()
    wait_until(lambda: client.info("replication").get("connected_slaves") == 0, message="gone")
    store = PaymentStore(client, keys, durability=Durability(replicas=1, timeout_ms=300))
    lonely = voltage_payment(str(uuid.uuid4()), "receiving")
    with pytest.raises(NotReplicated, match="0 of 1 Redis replicas"):
        store.adopt(lonely, source="test", now=2.0, first_poll_at=2.0)
    # The caller retries; a watch already stored waits for the replica again.
    with pytest.raises(NotReplicated):
        store.ensure_replicated(lonely.id, 3.0)
    subs = SubscriptionStore(
        client, keys, allow_private=True, durability=Durability(replicas=1, timeout_ms=200)
    )
    with pytest.raises(NotReplicated, match="subscription"):
        subs.create(url="http://127.0.0.1:9/hook")


def test_without_replicas_configured_nothing_waits(redis_client: redis.Redis) -> None:
    store = PaymentStore(redis_client, Keys(f"d{uuid.uuid4().hex[:8]}"))
    payment = voltage_payment(str(uuid.uuid4()), "receiving")
    assert store.adopt(payment, source="test", now=1.0, first_poll_at=1.0)
    store.ensure_replicated(payment.id, 2.0)


def test_the_api_answers_503_for_a_write_no_replica_confirmed() -> None:
    """A 500 would tell the application something broke; it is a retry, like a Redis outage."""
    import asyncio
    import json

    from fastapi import FastAPI
    from starlette.requests import Request

    from watcher.api.error_handlers import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)
    handler = app.exception_handlers[NotReplicated]
    request = Request({"type": "http", "method": "POST", "path": "/v1/payments", "headers": []})
    exc = NotReplicated("the watch of payment p: 0 of 1 Redis replicas confirmed it")
    response = asyncio.run(handler(request, exc))  # type: ignore[arg-type]
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = json.loads(bytes(response.body))["error"]
    assert error["type"] == "not_replicated"
    assert "retry" in error["detail"]
