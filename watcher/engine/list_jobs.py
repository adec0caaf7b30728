"""What the list jobs keep in Redis between runs: a short lock per job, and the reconciliation
pass in progress (where it started, the cursor it reached, how many pages so far).

One beat per deployment is the rule, but during a redeploy two may overlap for a moment: the
lock keeps them from listing side by side (and if they do, the compare-and-set still makes one
event). The pass's position lives here so a pass survives a beat restart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal, cast

import redis

from watcher.keys import Keys

ListJob = Literal["sweep", "reconcile"]


class ListJobs:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    @contextlib.contextmanager
    def locked(self, job: ListJob, ttl: float) -> Iterator[bool]:
        """Hold the job's lock for at most `ttl` seconds; yields False if another holds it."""
        name = self.keys.sweep_lock if job == "sweep" else self.keys.reconcile_lock
        lock = self.redis.lock(name, timeout=ttl, blocking=False)
        held = bool(lock.acquire(blocking=False))
        try:
            yield held
        finally:
            if held:
                # Expired meanwhile, or Redis is down: the expiry frees it either way.
                with contextlib.suppress(
                    redis.exceptions.LockError, redis.exceptions.ConnectionError
                ):
                    lock.release()

    def reconcile_pass(self) -> dict[str, str]:
        """`start`, `cursor`, `pages`, `last_created` of the pass in progress (no `start`
        between passes), and `started_at` of the last one begun."""
        return cast(dict[str, str], self.redis.hgetall(self.keys.reconcile_state))

    def note_reconcile_pass(self, fields: Mapping[str, str]) -> None:
        self.redis.hset(self.keys.reconcile_state, mapping=cast(Any, dict(fields)))

    def end_reconcile_pass(self, *, pages: int, now: float) -> None:
        """The pass in progress is done after `pages` pages; the next starts from scratch."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.reconcile_state, "start", "cursor", "last_created")
        pipe.hset(
            self.keys.reconcile_state,
            mapping={"last_pass_pages": pages, "last_pass_done_at": repr(now)},
        )
        pipe.execute()
