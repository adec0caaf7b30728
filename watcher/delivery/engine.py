"""Delivery I/O off the worker pool: chunks of one subscriber's deliveries run on threads of
the worker process, and each subscriber gets at most its fair share of those threads.

Why: a Celery pool has as many slots as CPUs (2 on the reference machine). When an attempt
held a slot, one subscriber that hangs until the timeout filled the pool, and healthy
subscribers, polls and dispatcher ticks waited minutes behind it (issue 11). A thread blocked
on a socket costs almost nothing, so the task that receives a chunk only hands it over here
and returns at once; the Redis lease on every claimed delivery still covers a process that
dies mid-attempt. A thread whose chunk went well asks its `Refill` for the next due chunks
(delivery/dispatch.py) instead of ending: a backlog drains without a broker round trip a chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from watcher.delivery.attempts import Chunk
from watcher.logging import get_logger

log = get_logger(__name__)

# Runs one chunk; True when it ran to its end with the subscriber healthy (the thread may
# then take more).
RunChunk = Callable[[list[str]], object]


class Refill(Protocol):
    window: float  # seconds a thread goes on taking chunks before it ends

    def next_chunks(self) -> list[Chunk]: ...

    def hand_back(self, delivery_ids: list[str]) -> None: ...

    def now(self) -> float: ...


@dataclass(frozen=True)
class Admission:
    """Whether a chunk was taken, and if not, why (for logs and tests)."""

    admitted: bool
    reason: str = ""


class DeliveryEngine:
    """Every subscriber is entitled to one thread, so a newly due subscriber always starts at
    once, whatever number of others hang (up to `ceiling` threads in all). Beyond its first,
    a subscriber may hold `capacity // (subscribers running + 1)` threads while fewer than
    `capacity` are busy: the `+ 1` keeps room for the next one to arrive, since a thread
    stuck on a hanging subscriber cannot be taken back before its timeout."""

    def __init__(
        self,
        capacity: int,
        run_chunk: RunChunk,
        *,
        ceiling: int | None = None,
        refill: Refill | None = None,
    ) -> None:
        self.capacity = capacity
        self.ceiling = ceiling or 4 * capacity
        self._run_chunk = run_chunk
        self._refill = refill
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._executor = ThreadPoolExecutor(
            max_workers=self.ceiling, thread_name_prefix="watcher-delivery"
        )

    def share(self, subscription_id: str) -> int:
        """How many chunks `subscription_id` may run now."""
        with self._lock:
            return self._share_locked(subscription_id)

    def _share_locked(self, subscription_id: str) -> int:
        busy = len(self._running) + (subscription_id not in self._running)
        return max(1, self.capacity // (busy + 1))

    def _refusal_locked(self, subscription_id: str) -> str:
        total = sum(self._running.values())
        held = self._running.get(subscription_id, 0)
        if held == 0:
            return "" if total < self.ceiling else "every delivery thread is busy"
        if total >= self.capacity:
            return "every delivery thread is busy"
        if held >= self._share_locked(subscription_id):
            return "subscriber holds its share of delivery threads"
        return ""

    def offer(self, subscription_id: str, delivery_ids: list[str]) -> Admission:
        with self._lock:
            refusal = self._refusal_locked(subscription_id)
            if refusal:
                return Admission(False, refusal)
            self._running[subscription_id] = self._running.get(subscription_id, 0) + 1
        self._executor.submit(self._run, subscription_id, delivery_ids)
        return Admission(True)

    def running(self) -> dict[str, int]:
        with self._lock:
            return dict(self._running)

    def _run(self, subscription_id: str, delivery_ids: list[str]) -> None:
        started = self._refill.now() if self._refill else 0.0
        try:
            while delivery_ids:
                clean = self._run_one(subscription_id, delivery_ids)
                if not clean or self._refill is None or self._closing.is_set():
                    break
                if self._refill.now() - started >= self._refill.window:
                    break
                delivery_ids = self._take_next(self._refill, subscription_id)
        finally:
            with self._lock:
                self._release_locked(subscription_id)

    def _run_one(self, subscription_id: str, delivery_ids: list[str]) -> bool:
        try:
            return self._run_chunk(delivery_ids) is True
        except Exception:
            # Redis went away or a bug: the claims' leases bring the deliveries back.
            log.exception("delivery chunk crashed", subscription_id=subscription_id)
            return False

    def _take_next(self, refill: Refill, subscription_id: str) -> list[str]:
        """The next due chunks: this thread keeps its subscriber's, if there is one, and offers
        the others like any chunk (so shares still hold); what no thread can take goes back."""
        try:
            chunks = refill.next_chunks()
        except Exception:
            log.exception("taking the next due deliveries failed")
            return []
        mine: list[str] = []
        for chunk in chunks:
            if chunk.subscription_id == subscription_id and not mine:
                mine = chunk.delivery_ids
            elif not self.offer(chunk.subscription_id, chunk.delivery_ids).admitted:
                refill.hand_back(chunk.delivery_ids)
        return mine

    def _release_locked(self, subscription_id: str) -> None:
        left = self._running.get(subscription_id, 1) - 1
        if left > 0:
            self._running[subscription_id] = left
        else:
            self._running.pop(subscription_id, None)

    def shutdown(self, wait: bool = True) -> None:
        self._closing.set()
        self._executor.shutdown(wait=wait, cancel_futures=False)
