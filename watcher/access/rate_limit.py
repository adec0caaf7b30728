"""A request rate per API token, so one busy client cannot starve the others.

A token bucket in Redis (`take_request.lua`), shared by every API process: each token may
make `rate` requests a second, `burst` at once. Over it the API answers 429 with Retry-After.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from watcher.keys import Keys
from watcher.lua import scripts_for


class RateLimiter:
    def __init__(self, client: redis.Redis, keys: Keys, *, rate: float, burst: int) -> None:
        self.keys = keys
        self.rate, self.burst = rate, burst
        self._take = scripts_for(client).take_request

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def retry_after(self, actor: str, now: float) -> int | None:
        """None when `actor` may make this request; else whole seconds until it may."""
        if not self.enabled:
            return None
        answer: list[Any] = self._take(
            keys=[self.keys.rate_limit(actor)], args=[repr(now), repr(self.rate), self.burst]
        )
        if int(answer[0]) == 1:
            return None
        return max(1, math.ceil(float(answer[1])))
