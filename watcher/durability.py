"""Writes that must survive a Redis failover: wait until a replica has them.

Redis replicates asynchronously, so a Sentinel failover can promote a replica that lacks the
last writes the old master acknowledged. Most of those heal by themselves: a lost transition
is detected again with the same event id, a lost delivery success is re-sent with the same
`webhook-id`. Two cannot heal: a new watch (nobody polls a payment the watcher forgot) and a
new subscription (nobody delivers to it). For those, WATCHER_REDIS_MIN_REPLICAS > 0 makes the
write wait for that many replicas (Redis `WAIT`), and a write no replica confirmed in time is
reported as an error, so the caller retries it (creates and watches are idempotent) instead of
trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NotReplicated(RuntimeError):
    """Fewer replicas than WATCHER_REDIS_MIN_REPLICAS confirmed a write in time."""


@dataclass(frozen=True)
class Durability:
    """`replicas` = 0 (the default, and right for a Redis without replicas) waits for nothing."""

    replicas: int = 0
    timeout_ms: int = 2000

    def wait_in(self, pipe: Any) -> None:
        """Queue a WAIT behind the writes in `pipe`: one connection, so it covers them, and
        the replication stream is ordered, so it covers every earlier write too."""
        if self.replicas > 0:
            pipe.wait(self.replicas, self.timeout_ms)

    def check(self, results: list[Any], what: str) -> None:
        """Raise NotReplicated when the WAIT queued by `wait_in` (the last result) fell short."""
        if self.replicas <= 0:
            return
        confirmed = int(results[-1])
        if confirmed < self.replicas:
            raise NotReplicated(
                f"{what}: {confirmed} of {self.replicas} Redis replicas confirmed it within "
                f"{self.timeout_ms} ms (WATCHER_REDIS_MIN_REPLICAS); retry it"
            )
