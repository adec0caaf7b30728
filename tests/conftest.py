"""Session-wide real services: a private redis-server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from watcher.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Our own redis-server for the whole session; never touches the machine's Redis."""
    data_dir: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer(data_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on a clean database: flushing is safe because the server is ours alone."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
