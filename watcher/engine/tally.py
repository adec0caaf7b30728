"""Counters and latency histograms in Redis, and the ones a poll makes, sent with its write.

A poll used to spend a round trip on each: the Voltage request counter, the latency
histogram, the poll counter. Inside `collecting()`, counts and observations made on this
thread are only noted; the poll's one write script (`record_poll.lua`) carries them, and
whatever no write took is sent in one pipeline when the block ends. Names and values are the
ones a direct write makes, so /metrics reads the same hashes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import redis

from watcher.keys import Keys

# Upper bounds (seconds) of the latency histograms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def bucket_field(seconds: float) -> str:
    """The histogram field one observation of `seconds` lands in."""
    bound = next((b for b in LATENCY_BUCKETS if seconds <= b), float("inf"))
    return f"le:{bound!r}"


@dataclass
class Collected:
    """What one block counted and timed, not yet written."""

    counters: dict[str, int] = field(default_factory=dict)
    latencies: list[tuple[str, float]] = field(default_factory=list)

    def take_counters(self) -> dict[str, int]:
        taken, self.counters = self.counters, {}
        return taken

    def take_latency(self, kind: str) -> float | None:
        """The first observation of `kind`, removed; None when there is none."""
        for index, (seen, seconds) in enumerate(self.latencies):
            if seen == kind:
                del self.latencies[index]
                return seconds
        return None


def count_in(pipe: redis.client.Pipeline, keys: Keys, name: str, amount: int = 1) -> None:
    """A counter written in a caller's pipeline, with the writes it counts (a watch, a stop,
    a dead letter): one home for the counters' key, whoever writes them."""
    pipe.hincrby(keys.counters, name, amount)


class Tally:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._local = threading.local()

    @property
    def collected(self) -> Collected | None:
        """This thread's open collection, if a block is collecting."""
        return cast(Collected | None, getattr(self._local, "collected", None))

    @contextmanager
    def collecting(self) -> Iterator[Collected]:
        outer = self.collected
        collected = Collected()
        self._local.collected = collected
        try:
            yield collected
        finally:
            self._local.collected = outer
            self._write(collected)

    def count(self, name: str, amount: int = 1) -> None:
        collected = self.collected
        if collected is not None:
            collected.counters[name] = collected.counters.get(name, 0) + amount
            return
        self.redis.hincrby(self.keys.counters, name, amount)

    def observe_latency(self, kind: str, seconds: float) -> None:
        """One observation for a Prometheus histogram kept in Redis (workers are many
        processes; the API reads the sums at scrape time)."""
        collected = self.collected
        if collected is not None:
            collected.latencies.append((kind, seconds))
            return
        self._write(Collected(latencies=[(kind, seconds)]))

    def _write(self, collected: Collected) -> None:
        if not collected.counters and not collected.latencies:
            return
        pipe = self.redis.pipeline(transaction=False)
        for name, amount in collected.take_counters().items():
            count_in(pipe, self.keys, name, amount)
        for kind, seconds in collected.latencies:
            key = self.keys.latency(kind)
            pipe.hincrby(key, bucket_field(seconds), 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrby(key, "sum_us", round(seconds * 1_000_000))
        collected.latencies = []
        pipe.execute()

    def latency_histogram(self, kind: str) -> tuple[list[tuple[str, int]], int, float]:
        """Cumulative buckets (as Prometheus wants them), count and sum in seconds."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.latency(kind)))
        buckets: list[tuple[str, int]] = []
        running = 0
        for bound in (*LATENCY_BUCKETS, float("inf")):
            running += int(raw.get(f"le:{bound!r}", 0))
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return buckets, int(raw.get("count", 0)), int(raw.get("sum_us", 0)) / 1_000_000

    def counters(self) -> dict[str, int]:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.counters))
        return {k: int(v) for k, v in raw.items()}
