"""When a payment needs a read of its own, and why.

While list sweeps are healthy they detect, so a pending payment is read on its own only to get
its BOLT11 (read-back), once just after its invoice expires (if no sweep reported it first),
and, when its expiry is unknown, every `sparse_interval`. While list calls fail, the fallback
schedule (`steps`: fast while young, slower with age) polls every pending payment.
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.engine.records import PaymentRecord
from watcher.settings import Settings
from watcher.timing import jittered
from watcher.voltage.models import PaymentStatus
from watcher.voltage.purpose import Purpose

_EARLY_STATUSES = frozenset({PaymentStatus.GENERATING, PaymentStatus.SENDING})
# How far past a limit the read that notices it is scheduled: beyond the dispatcher's
# lookahead (half a tick, which claims reads that early), or the read comes too soon to stop
# the watch and a second one is needed (seen in CI).
_PAST_LIMIT = 1.0


@dataclass(frozen=True)
class PollPolicy:
    steps: tuple[tuple[float, float], ...]
    generating_interval: float
    not_found_window: float
    expiry_grace: float
    hard_limit: float
    max_watch_age: float
    error_backoff_max: float
    sparse_interval: float = 600.0
    # A payment a sweep reported final but a read did not: read it again this soon.
    recheck_after: float = 3.0
    jitter: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> PollPolicy:
        return cls(
            steps=tuple(settings.watcher_poll_schedule),
            generating_interval=settings.watcher_generating_poll_interval,
            not_found_window=settings.watcher_not_found_window,
            expiry_grace=settings.watcher_expiry_grace,
            hard_limit=settings.watcher_poll_hard_limit,
            max_watch_age=settings.watcher_max_watch_age,
            error_backoff_max=settings.watcher_poll_error_backoff_max,
            sparse_interval=settings.watcher_poll_sparse_interval,
        )

    def interval(self, record: PaymentRecord, now: float) -> float:
        if record.status in _EARLY_STATUSES:
            return self.generating_interval
        age = max(0.0, now - record.watched_at)
        for until_age, every in self.steps:
            if age < until_age:
                return every
        return self.steps[-1][1]

    def _jittered(self, delay: float) -> float:
        return jittered(delay, self.jitter)

    def stop_reason(self, record: PaymentRecord, now: float) -> str | None:
        """Why polling must end now, or None to keep going."""
        past_expiry = (
            record.expires_at is not None
            and now > record.expires_at + self.expiry_grace + self.hard_limit
        )
        if past_expiry or now - record.watched_at > self.max_watch_age:
            return "hard_limit"
        return None

    def next_poll(self, record: PaymentRecord, now: float, *, fallback: bool = False) -> float:
        final_check = (
            record.expires_at + self.expiry_grace if record.expires_at is not None else None
        )
        if self._needs_invoice(record) or fallback:
            at = now + self._jittered(self.interval(record, now))
        elif final_check is not None and now < final_check:
            at = final_check  # healthy sweeps: the expiry check is the only read left
        elif final_check is not None:
            at = now + self._jittered(self.interval(record, now))  # past it, still not final
        else:
            at = now + self._jittered(self.sparse_interval)
        if final_check is not None and now < final_check < at:
            at = final_check
        # One read when the watch reaches its age limit, so it stops on time and says why.
        age_limit = record.watched_at + self.max_watch_age + _PAST_LIMIT
        return min(at, age_limit) if age_limit > now else at

    def purpose(self, record: PaymentRecord, now: float, *, fallback: bool) -> Purpose:
        """Why the schedule asks for this read (counted per purpose)."""
        if self._needs_invoice(record):
            return Purpose.READ_BACK
        if fallback:
            return Purpose.FALLBACK_POLL
        if record.expires_at is not None and now >= record.expires_at:
            return Purpose.EXPIRY_CHECK
        return Purpose.POLL

    @staticmethod
    def _needs_invoice(record: PaymentRecord) -> bool:
        return record.status in _EARLY_STATUSES or not record.payment_request

    def after_error(
        self, record: PaymentRecord, now: float, retry_after: float | None = None
    ) -> float:
        """Back off on 429/5xx/timeouts, longer each time in a row, capped, never dropped.

        A first error waits one normal interval (doubling at once made a single 429 cost a
        30 s payment a full minute); only errors in a row double it.
        """
        base = max(1.0, self.interval(record, now))
        streak = min(max(record.error_streak - 1, 0), 10)
        delay = min(self.error_backoff_max, base * (2**streak))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.error_backoff_max))
        return now + self._jittered(delay)

    def not_found_expired(self, first_seen: float, record: PaymentRecord, now: float) -> bool:
        """Early 404s mean "not visible yet"; only past the window do we believe them."""
        return now - first_seen > self.not_found_window
