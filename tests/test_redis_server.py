"""The session's private Redis, and the launcher single-machine mode will use."""

from __future__ import annotations

from pathlib import Path

import redis

from watcher.redis_server import RedisServer


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
