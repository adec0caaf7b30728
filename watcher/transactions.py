"""Read, decide, write under WATCH: the one way a store changes a hash it must read first,
for the stores that own those keys (they pass the client and the key names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from redis.client import Pipeline

T = TypeVar("T")

MAX_TRIES = 50  # each retry means someone else changed the key: 50 in a row is a bug


def watched(client: redis.Redis, write: Callable[[Pipeline], T], *keys: str) -> T:
    """`write(pipe)` reads in immediate mode, calls `pipe.multi()`, queues its writes; they
    apply only if none of `keys` changed since the reads, else it runs again."""
    with client.pipeline(transaction=True) as pipe:
        for _ in range(MAX_TRIES):
            try:
                if keys:
                    pipe.watch(*keys)  # type: ignore[no-untyped-call]
                result = write(pipe)
                pipe.execute()
            except redis.WatchError:
                continue
            return result
    raise redis.WatchError(f"{', '.join(keys)} kept changing: gave up after {MAX_TRIES} tries")
