"""When to try a Voltage call again, and how long to wait first.

One call gets a time *budget*, not a number of attempts: a scheduler cares about how long a
worker is tied up, not how many packets it sent. Between attempts we wait an exponential
backoff with full jitter, unless the server said how long to wait (``Retry-After`` or
``x-retry-after-ms``). When the server asks for more than what is left of the budget we do not
block the worker: the error is raised at once with ``retry_after`` set, so the caller can park
the payment and come back later.

The clock, the sleep and the random source are fields so tests can replace them.
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watcher.timing import parse_retry_after
from watcher.voltage.errors import VoltageError

if TYPE_CHECKING:
    from watcher.settings import Settings

# 2**60 * base_delay is far above any sane max_delay; capping the exponent avoids overflow.
_MAX_EXPONENT = 60


@dataclass(frozen=True)
class RetryPolicy:
    """How long one call may spend retrying, and the backoff between attempts (seconds)."""

    budget: float = 20.0
    base_delay: float = 0.2
    max_delay: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    random: Callable[[], float] = field(default=_random.random, compare=False, repr=False)
    wall_clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _finite(self.budget) or self.budget < 0:
            raise ValueError(f"budget must be a finite number >= 0, got {self.budget!r}")
        if not _finite(self.base_delay) or self.base_delay <= 0:
            raise ValueError(f"base_delay must be a finite number > 0, got {self.base_delay!r}")
        if not _finite(self.max_delay) or self.max_delay < self.base_delay:
            raise ValueError(f"max_delay must be finite and >= base_delay, got {self.max_delay!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            budget=settings.voltage_retry_budget,
            base_delay=settings.voltage_retry_base_delay,
            max_delay=settings.voltage_retry_max_delay,
        )

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))]."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        ceiling = min(self.max_delay, math.ldexp(self.base_delay, exponent))
        return self.random() * ceiling

    def next_delay(self, error: VoltageError, *, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up and raise.

        ``attempt`` is the number of attempts made so far (1 after the first one failed),
        ``elapsed`` the seconds spent on this call so far, attempts included.
        """
        if not error.retryable:
            return None
        remaining = self.budget - elapsed
        if error.retry_after is not None:
            # The server named its price: pay it if we can afford it, otherwise let the
            # caller park the work (the error keeps its retry_after).
            wait = max(error.retry_after, 0.0)
            return wait if wait <= remaining else None
        delay = self.backoff(attempt)
        return delay if delay <= remaining else None

    def retry_after(self, headers: Mapping[str, str]) -> float | None:
        """The server's requested wait in seconds, read with this policy's wall clock."""
        return parse_retry_after(headers, now=self.wall_clock())


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
