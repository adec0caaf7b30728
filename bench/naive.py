"""The baselines, no watcher code: GET every pending payment every 2 s with plain `requests` (a
Session per thread), recording what it achieved, as a round may overrun the interval; and the
plain requests loops the throughput benches compare one worker with."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.harness import Run, Sessions, Usage, timed
from bench.report import threads as threads_label

FINAL = frozenset({"completed", "failed", "expired"})
FinalCallback = Callable[[str, str, float], None]  # payment id, status, when the GET answered


def naive_threads(payments: int) -> int:
    """Enough threads for one round of `payments` GETs to fit in 2 s (a few ms each)."""
    return max(8, min(128, -(-payments // 40)))


class NaiveLoop:
    """GETs every payment it was given, every `interval` s, until the payment is final."""

    def __init__(
        self, payments_url: str, api_key: str, *, interval: float, threads: int,
        on_final: FinalCallback | None = None,
    ) -> None:  # fmt: skip
        self.url_prefix, self.api_key = payments_url.rstrip("/") + "/", api_key
        self.interval, self.threads, self.on_final = interval, threads, on_final
        self.gets = self.get_errors = self.rounds = self.overruns = self.gap_count = 0
        self.longest_round = self.gap_sum = 0.0  # gap: seconds between two GETs of a payment
        self._last_get: dict[str, float] = {}
        self._pending: dict[str, None] = {}
        self._lock, self._stop, self._sessions = threading.Lock(), threading.Event(), Sessions()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="naive-poll")
        self._thread = threading.Thread(target=self._loop, name="naive-loop", daemon=True)

    def add(self, payment_id: str) -> None:
        with self._lock:
            self._pending[payment_id] = None

    @property
    def mean_gap(self) -> float | None:
        """The achieved interval: mean seconds between two GETs of the same payment."""
        with self._lock:
            return self.gap_sum / self.gap_count if self.gap_count else None

    def kept_promise(self) -> bool:
        """Did it GET each payment about every `interval` (within 10%)?"""
        return (gap := self.mean_gap) is None or gap <= self.interval * 1.1

    def start(self) -> NaiveLoop:
        self._thread.start()
        return self

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._sessions.close()

    def _check(self, pid: str) -> None:
        started, status, ok = time.monotonic(), "", False
        with contextlib.suppress(requests.RequestException, ValueError, AttributeError):
            response = self._sessions.get().get(
                self.url_prefix + pid, headers={"x-api-key": self.api_key}, timeout=(3.05, 10)
            )
            ok = response.status_code == 200
            status = str(response.json().get("status", "")) if ok else ""
        seen = time.time()
        with self._lock:  # book the GET; the first to see the payment final reports it
            self.gets, self.get_errors = self.gets + 1, self.get_errors + (not ok)
            if (last := self._last_get.get(pid)) is not None:
                self.gap_sum, self.gap_count = self.gap_sum + started - last, self.gap_count + 1
            self._last_get[pid] = started
            final = status in FINAL and self._pending.pop(pid, 0) is None
        if final and self.on_final is not None:
            self.on_final(pid, status, seen)

    def _loop(self) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                ids = list(self._pending)
            if ids:
                began = time.monotonic()
                list(self._pool.map(self._check, ids))
                self.rounds += 1
                self.longest_round = max(self.longest_round, time.monotonic() - began)
            next_round += self.interval
            if (now := time.monotonic()) > next_round:
                self.overruns, next_round = self.overruns + 1, now
            self._stop.wait(next_round - now)


def plain_loop(
    items: Sequence[Any], threads: int, call: Callable[[requests.Session, Any], bool],
    deadline: float,
) -> tuple[int, int]:  # fmt: skip
    """`call(session, item)` for every item from `threads` threads (one: this one), a Session
    each, no watcher code; returns (ok, errors)."""
    tallies = [[0, 0] for _ in range(threads)]
    stop_at = time.monotonic() + deadline

    def work(part: Sequence[Any], tally: list[int]) -> None:
        with requests.Session() as session:
            for item in part:
                if time.monotonic() > stop_at:
                    return
                try:
                    ok = call(session, item)
                except (requests.RequestException, ValueError, KeyError):
                    ok = False
                tally[0 if ok else 1] += 1

    if threads == 1:
        work(items, tallies[0])
    workers = [threading.Thread(target=work, args=(items[i::threads], tally), name=f"plain-{i}")
               for i, tally in enumerate(tallies if threads > 1 else [])]  # fmt: skip
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(max(1.0, stop_at - time.monotonic() + 20))
    return sum(t[0] for t in tallies), sum(t[1] for t in tallies)


def plain_run(
    label: str, items: Sequence[Any], threads: int, call: Callable[[requests.Session, Any], bool],
    deadline: float, usage: Callable[[], Usage], **info: Any,
) -> Run:  # fmt: skip
    """A plain loop measured as the watcher's runs are (`info` gets its error count)."""
    seconds, delta, (ok, errors) = timed(usage, lambda: plain_loop(items, threads, call, deadline))
    label, info = f"{label}, {threads_label(threads)}", {**info, "errors": errors}
    return Run(label, "plain", len(items), ok, seconds, delta, info)
