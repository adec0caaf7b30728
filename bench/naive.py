"""The baseline every watcher number is compared with: GET every pending payment every 2 s.

Plain `requests`, one Session per thread, no watcher code. It keeps its promise only if a round
of GETs fits in the interval, so it records what it really achieved: the mean gap between two
GETs of the same payment, rounds that overran, the longest round.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

FINAL = frozenset({"completed", "failed", "expired"})
FinalCallback = Callable[[str, str, float], None]  # payment id, status, when the GET answered


def naive_threads(payments: int) -> int:
    """Enough threads for one round of `payments` GETs to fit in 2 s (a few ms each)."""
    return max(8, min(128, -(-payments // 40)))


class NaiveLoop:
    """GETs every payment it was given, every `interval` s, until the payment is final."""

    def __init__(
        self,
        payments_url: str,
        api_key: str,
        *,
        interval: float,
        threads: int,
        on_final: FinalCallback | None = None,
    ) -> None:
        self.url_prefix = payments_url.rstrip("/") + "/"
        self.api_key = api_key
        self.interval = interval
        self.threads = threads
        self.on_final = on_final
        self.gets = 0
        self.get_errors = 0
        self.rounds = 0
        self.overruns = 0
        self.longest_round = 0.0
        self.per_payment: Counter[str] = Counter()
        self.gap_sum = 0.0  # seconds between consecutive GETs of one payment, summed
        self.gap_count = 0
        self._last_get: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, None] = {}
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="naive-poll")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="naive-loop", daemon=True)

    def add(self, payment_id: str) -> None:
        with self._lock:
            self._pending[payment_id] = None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def mean_gap(self) -> float | None:
        """The achieved interval: mean seconds between two GETs of the same payment."""
        with self._lock:
            return self.gap_sum / self.gap_count if self.gap_count else None

    def kept_promise(self) -> bool:
        """Did it GET each payment about every `interval` (within 10%)?"""
        gap = self.mean_gap
        return gap is None or gap <= self.interval * 1.1

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
        for session in self._sessions:
            session.close()

    def _http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _check(self, pid: str) -> None:
        started = time.monotonic()
        try:
            response = self._http().get(
                self.url_prefix + pid, headers={"x-api-key": self.api_key}, timeout=(3.05, 10)
            )
        except requests.RequestException:
            self._count(pid, started, ok=False)
            return
        seen = time.time()
        status = ""
        if response.status_code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                status = str(response.json().get("status", ""))
        final = self._count(pid, started, ok=response.status_code == 200, status=status)
        if final and self.on_final is not None:
            self.on_final(pid, status, seen)

    def _count(self, pid: str, started: float, *, ok: bool, status: str = "") -> bool:
        """Book one GET; True when it is the first to see the payment final."""
        with self._lock:
            self.gets += 1
            self.per_payment[pid] += 1
            if not ok:
                self.get_errors += 1
            last = self._last_get.get(pid)
            if last is not None:
                self.gap_sum += started - last
                self.gap_count += 1
            self._last_get[pid] = started
            if ok and status in FINAL and pid in self._pending:
                del self._pending[pid]
                return True
            return False

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
            now = time.monotonic()
            if now > next_round:
                self.overruns += 1
                next_round = now
            self._stop.wait(next_round - now)
