"""What `watcher up` restarts when it dies, and when: exponential, capped backoff that gives up
on a crash loop, over the children and the embedded Redis alike."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from watcher.launcher import Process
from watcher.redis_server import RedisServer

# A child that keeps dying is not restarted forever: this many restarts a minute at most.
MAX_RESTARTS_PER_MINUTE = 5
# Restart delays double from FIRST up to CAP; a process that ran HEALTHY_AFTER seconds before
# dying starts over at FIRST (a crash a day is not a crash loop).
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
HEALTHY_AFTER = 60.0


@dataclass
class Backoff:
    """When a dead process may start again: exponential and capped, and not forever."""

    consecutive: int = 0
    restarts: list[float] = field(default_factory=list)
    started_at: float = 0.0
    due: float | None = None  # while it is down: when it starts again

    def died(self, now: float) -> float | None:
        """The delay before the next start, or None: it keeps dying, give up."""
        if now - self.started_at >= HEALTHY_AFTER:
            self.consecutive = 0
        self.restarts = [t for t in self.restarts if now - t < 60]
        if len(self.restarts) >= MAX_RESTARTS_PER_MINUTE:
            return None
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * (1 << min(self.consecutive, 16)))
        self.consecutive += 1
        self.due = now + delay
        return delay

    def launched(self, now: float, *, restart: bool) -> None:
        self.due = None
        self.started_at = now
        if restart:
            self.restarts.append(now)


class Supervised(Protocol):
    """What the watch loop needs of a process: the children and the embedded Redis."""

    name: str
    backoff: Backoff

    @property
    def alive(self) -> bool: ...

    @property
    def exit_code(self) -> int | None: ...

    def start(self, env: Mapping[str, str]) -> object: ...


@dataclass(eq=False)
class Child(Process):
    """A child process (output to ours: one log stream) with its restart backoff."""

    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class EmbeddedRedis:
    """The embedded RedisServer as a supervised process: same port, data dir and password."""

    server: RedisServer
    name: str = "redis"
    backoff: Backoff = field(default_factory=Backoff)

    @property
    def alive(self) -> bool:
        return self.server.alive

    @property
    def exit_code(self) -> int | None:
        return self.server.returncode

    def start(self, env: Mapping[str, str]) -> object:
        return self.server.start()


def signal_name(code: int | None) -> str | None:
    """SIGKILL for an exit code of -9; None for a normal exit."""
    if code is None or code >= 0:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return None
