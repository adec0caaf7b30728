"""Whether Voltage's list endpoint works, and so which detection is on: sweeps, or the
fallback to per-payment polls.

Sweeps detect while list calls answer. When they have failed (5xx, 429, timeouts) for
`fallback_after` seconds the watcher falls back to polling every pending payment on the
fallback schedule, and goes back to sweeps at the first list call that works. The state lives
in Redis, so the beat that sweeps and the workers that poll agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from watcher.keys import Keys
from watcher.timing import stretched

# Between list attempts while they fail: doubling from the sweep interval up to this. Short,
# because while the list fails every pending payment is polled instead: one probe costs far
# less than the polls a longer wait keeps going (the fault suite saw a 15 s outage hold the
# fallback for 100 s with a 30 s cap). A Retry-After up to RETRY_AFTER_CAP is honoured.
MAX_LIST_BACKOFF = 5.0
RETRY_AFTER_CAP = 30.0


@dataclass(frozen=True)
class HealthChange:
    """What one list outcome changed: fallback began, fallback ended, or neither."""

    entered_fallback: bool = False
    left_fallback: bool = False
    failing_for: float = 0.0


@dataclass(frozen=True)
class HealthState:
    fallback: bool
    failing_since: float | None
    last_ok_at: float | None
    failures: int


class ListHealth:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        fallback_after: float,
        base_backoff: float,
        sweeps_enabled: bool = True,
    ) -> None:
        self.redis = client
        self.key = keys.list_health
        self.fallback_after = fallback_after
        self.base_backoff = max(base_backoff, 0.5)
        self.sweeps_enabled = sweeps_enabled

    def state(self) -> HealthState:
        raw = cast(dict[str, str], self.redis.hgetall(self.key))
        return HealthState(
            fallback=not self.sweeps_enabled or bool(raw.get("fallback_since")),
            failing_since=_float(raw.get("failing_since")),
            last_ok_at=_float(raw.get("ok_at")),
            failures=int(raw.get("failures") or 0),
        )

    def in_fallback(self) -> bool:
        """Per-payment polls run on the fallback schedule; with sweeps off, always."""
        return not self.sweeps_enabled or bool(self.redis.hget(self.key, "fallback_since"))

    def may_list(self, now: float) -> bool:
        """False while backing off after failed list calls (a throttled list is not hammered)."""
        retry_at = _float(cast(str | None, self.redis.hget(self.key, "retry_at")))
        return retry_at is None or now >= retry_at

    def succeeded(self, now: float) -> HealthChange:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.key, "fallback_since")
        pipe.hdel(self.key, "failing_since", "fallback_since", "retry_at")
        pipe.hset(self.key, mapping={"ok_at": repr(now), "failures": "0"})
        was_fallback, _, _ = pipe.execute()
        return HealthChange(left_fallback=bool(was_fallback))

    def failed(self, now: float, retry_after: float | None = None) -> HealthChange:
        """Count a failed list call; enter fallback once they have failed long enough."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(self.key, "failing_since", repr(now))
        pipe.hincrby(self.key, "failures", 1)
        pipe.hget(self.key, "failing_since")
        pipe.hget(self.key, "fallback_since")
        _, failures, since_raw, fallback_since = pipe.execute()
        failing_for = now - (_float(since_raw) or now)
        backoff = min(MAX_LIST_BACKOFF, self.base_backoff * 2 ** min(int(failures) - 1, 10))
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, RETRY_AFTER_CAP))
        backoff = stretched(backoff, 0.1)
        if not fallback_since and failing_for < self.fallback_after:
            # Probe again when the fallback is due, so it starts on time, not a backoff late
            # (the fault suite saw 9 s outages end before the doubling probes noticed 5 s).
            backoff = min(backoff, max(self.fallback_after - failing_for, 0.2))
        self.redis.hset(self.key, "retry_at", repr(now + backoff))
        entered = failing_for >= self.fallback_after and bool(
            self.redis.hsetnx(self.key, "fallback_since", repr(now))
        )
        return HealthChange(entered_fallback=entered, failing_for=failing_for)


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None
