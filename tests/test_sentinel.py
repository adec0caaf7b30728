"""Redis Sentinel: the store and the Celery broker find the master through real sentinels."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from watcher.engine.watching import create_and_watch
from watcher.redis_server import RedisServer, find_redis_server, free_port
from watcher.runtime import Runtime, sentinel_hosts
from watcher.settings import ConfigError, load_settings


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    master = RedisServer(tmp_path / "master").start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor watched 127.0.0.1 {master.port} 1\n"
    )
    proc = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=1)

        def knows_master() -> bool:
            try:
                return bool(
                    client.execute_command("SENTINEL", "get-master-addr-by-name", "watched")
                )
            except redis.ConnectionError:
                return False

        wait_until(knows_master, timeout=20, message="the sentinel to know the master")
        yield f"sentinel://127.0.0.1:{port}/3"
    finally:
        proc.terminate()
        proc.wait(10)
        master.stop()


def test_runtime_reaches_the_master_through_sentinel(sentinel_url: str) -> None:
    settings = load_settings(
        watcher_redis_url=sentinel_url, watcher_redis_sentinel_master="watched"
    )
    rt = Runtime.from_settings(settings)
    rt.payments.count("polls")
    assert rt.payments.counters()["polls"] == 1
    assert rt.redis.connection_pool.connection_kwargs.get("db") == 3


def test_sentinel_url_needs_the_master_name() -> None:
    with pytest.raises(ConfigError, match="WATCHER_REDIS_SENTINEL_MASTER"):
        load_settings(watcher_redis_url="sentinel://127.0.0.1:26379")


def test_sentinel_urls_parse_like_celery_s() -> None:
    hosts, options = sentinel_hosts(
        "sentinel://:s%40cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380"
    )
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert options == {"password": "s@cret", "db": 2}
    with pytest.raises(ConfigError):
        sentinel_hosts("sentinel://")


def test_worker_and_beat_run_through_sentinel(
    sentinel_url: str, make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    stack = make_stack(WATCHER_REDIS_URL=sentinel_url, WATCHER_REDIS_SENTINEL_MASTER="watched")
    stack.start_worker()
    stack.start_beat()
    payment_id = create_and_watch(stack.runtime, amount_msats=2_000).record.id
    sim_control.settle(payment_id)
    wait_until(
        lambda: any(e["payment_id"] == payment_id for e in stack.runtime.payments.outbox_events()),
        timeout=40,
        message="the event, with Celery's broker behind sentinel",
    )


@pytest.mark.timeout(400)
def test_a_failover_under_load_loses_no_payment(tmp_path: Path) -> None:
    """The fault suite's Sentinel phase, smaller: the master is SIGKILLed mid-load, the
    replica promoted, and every payment still reaches the subscriber under one webhook-id."""
    from tests.chaos.failover import run_failover_phase

    report = run_failover_phase(tmp_path, payments=40, log=lambda _line: None)
    assert report.failover_seconds is not None
    assert report.problems() == []
    assert report.delivered == report.payments == 40
