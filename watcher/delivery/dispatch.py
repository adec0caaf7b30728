"""Getting due deliveries to delivery threads: the dispatcher tick sends each subscriber only
the chunks it has room for, and a thread that ends a clean chunk takes the next due ones itself.

Why: a tick claims up to a batch (1,000) of due deliveries. Sent as chunks all at once, one
busy subscriber's 100 chunks met an in-flight cap of 8; 92 came back through the broker and
Redis, and most of the worker's CPU went on that (issue 14: 1,830 of 3,830 sends handed back).
Now a subscriber gets `cap - attempts under way` chunks per tick; what it has no room for goes
back due at once, behind everything that was already due, so it holds no one else back. A
thread whose chunk went well claims the next due first attempts from Redis instead of waiting
for a tick and a broker round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from watcher.delivery.attempts import SLOT_WAIT, Chunk, group_by_subscription
from watcher.delivery.store import DeliveryStore

# A chunk's thread goes on taking due deliveries for at most this long, then ends: the next
# tick sends fresh chunks, and a stopping worker is not held up by a long backlog.
REFILL_WINDOW = 5.0
# How deep a tick claims past deliveries it holds back, in batches.
SCAN_DEPTH = 4


@dataclass(frozen=True)
class DispatchLimits:
    lease: float
    batch: int
    chunk_size: int
    max_in_flight: int


SendChunk = Callable[[Chunk, bool], None]  # (chunk, is it a retry)


def dispatch_due_deliveries(
    deliveries: DeliveryStore, limits: DispatchLimits, now: float, send: SendChunk
) -> int:
    """Claim due first attempts and retries; send what each subscriber has room for and hand
    the rest back. Claims go on past held deliveries (up to SCAN_DEPTH batches), so a
    subscriber's backlog bigger than a batch does not hide others' due deliveries. Returns
    how many deliveries were sent."""
    room: dict[str, int] = {}
    sent = claimed = 0
    held: list[str] = []
    while sent < limits.batch and claimed < SCAN_DEPTH * limits.batch:
        want = limits.batch - sent
        first, retries = deliveries.claim_due_attempts(now, limits.lease, want)
        claimed += len(first) + len(retries)
        chunks = [(c, False) for c in group_by_subscription(deliveries, first, limits.chunk_size)]
        chunks += [(c, True) for c in group_by_subscription(deliveries, retries, limits.chunk_size)]
        new = sorted({chunk.subscription_id for chunk, _ in chunks} - room.keys())
        room.update(
            {s: limits.max_in_flight - n for s, n in deliveries.in_flight(new, now).items()}
        )
        for chunk, retry in chunks:
            if room[chunk.subscription_id] <= 0:
                held.extend(chunk.delivery_ids)
                continue
            room[chunk.subscription_id] -= 1
            send(chunk, retry)
            sent += len(chunk.delivery_ids)
        if max(len(first), len(retries)) < want:
            break  # nothing more is due
    deliveries.release_claims(held, now)
    return sent


class DueChunks:
    """What a delivery thread takes next (the engine's `Refill`): the next due first
    attempts, in due order, whoever they belong to."""

    def __init__(
        self, deliveries: DeliveryStore, limits: DispatchLimits, clock: Callable[[], float]
    ) -> None:
        self._deliveries, self._limits, self._clock = deliveries, limits, clock
        self.window = REFILL_WINDOW

    def next_chunks(self) -> list[Chunk]:
        limits = self._limits
        ids = self._deliveries.claim_due_first_attempts(
            self._clock(), limits.lease, limits.chunk_size
        )
        return group_by_subscription(self._deliveries, ids, limits.chunk_size) if ids else []

    def hand_back(self, delivery_ids: list[str]) -> None:
        """No thread for them here now: due again in a moment, for any worker."""
        self._deliveries.release_claims(delivery_ids, self._clock() + SLOT_WAIT)

    def now(self) -> float:
        return self._clock()
