"""Getting due deliveries to delivery threads: the dispatcher tick sends each subscriber only
the chunks it has room for, and a thread that ends a clean chunk takes the next due ones itself.

Why: a tick claims up to a batch (1,000) of due deliveries. Sent as chunks all at once, one
busy subscriber's 100 chunks met an in-flight cap of 8; 92 came back through the broker and
Redis, and most of the worker's CPU went on that (issue 14: 1,830 of 3,830 sends handed back).
Handing the rest back still cost a claim and a release of each held delivery per tick (34
ZADDs and 33 HGETs per delivery sent, at 8,000 due for one subscriber). Now the claim itself
(claim_with_room.lua) gives a subscriber at most `cap - attempts under way` chunks and leaves
a full subscriber's deliveries due and unclaimed. A thread whose chunk went well claims the
next due first attempts the same way instead of waiting for a tick and a broker round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from watcher.delivery.attempts import SLOT_WAIT, Chunk
from watcher.delivery.store import ClaimRoom, DeliveryStore

# A chunk's thread goes on taking due deliveries for at most this long, then ends: the next
# tick sends fresh chunks, and a stopping worker is not held up by a long backlog.
REFILL_WINDOW = 5.0
# How deep a tick looks past deliveries of full subscribers, in batches; a thread's refill,
# in chunks (a thread that finds only full subscribers ends, and the next tick sends).
SCAN_DEPTH = 4
REFILL_SCAN = 8


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
    """Claim due first attempts and retries of subscribers with room and send them as chunks.
    A full subscriber's deliveries stay due and unclaimed; the claim looks past them (up to
    SCAN_DEPTH batches), so a backlog bigger than a batch does not hide others. Returns how
    many deliveries were sent."""
    room = ClaimRoom(
        want=limits.batch,
        scan=SCAN_DEPTH * limits.batch,
        chunk_size=limits.chunk_size,
        cap=limits.max_in_flight,
    )
    claimed = deliveries.claim_with_room(now, limits.lease, room)
    for chunk, retry in chunks_of(claimed, limits.chunk_size):
        send(chunk, retry)
    return len(claimed)


def chunks_of(claimed: list[tuple[bool, str, str]], size: int) -> list[tuple[Chunk, bool]]:
    """Claimed deliveries as one subscriber's chunks of `size`, in claim order."""
    groups: dict[tuple[bool, str], list[str]] = {}
    for retry, sub_id, delivery_id in claimed:
        groups.setdefault((retry, sub_id), []).append(delivery_id)
    return [
        (Chunk(sub_id, ids[start : start + size]), retry)
        for (retry, sub_id), ids in groups.items()
        for start in range(0, len(ids), size)
    ]


class DueChunks:
    """What a delivery thread takes next (the engine's `Refill`): the next due first
    attempts of subscribers with room, in due order, whoever they belong to."""

    def __init__(
        self, deliveries: DeliveryStore, limits: DispatchLimits, clock: Callable[[], float]
    ) -> None:
        self._deliveries, self._limits, self._clock = deliveries, limits, clock
        self.window = REFILL_WINDOW
        self._room = ClaimRoom(
            want=limits.chunk_size,
            scan=REFILL_SCAN * limits.chunk_size,
            chunk_size=limits.chunk_size,
            cap=limits.max_in_flight,
        )

    def next_chunks(self) -> list[Chunk]:
        claimed = self._deliveries.claim_with_room(
            self._clock(), self._limits.lease, self._room, retries=False
        )
        return [chunk for chunk, _ in chunks_of(claimed, self._limits.chunk_size)]

    def hand_back(self, delivery_ids: list[str]) -> None:
        """No thread for them here now: due again in a moment, for any worker."""
        self._deliveries.release_claims(delivery_ids, self._clock() + SLOT_WAIT)

    def now(self) -> float:
        return self._clock()
