"""Small time helpers every layer shares: how a time is written, how a delay is spread, and how
long a server asked us to wait.

They sit at the bottom, beside `ids.py`, so the Voltage client, the engine, delivery and the
simulator use one copy of each instead of borrowing from one another; nothing here imports the
rest of the watcher. The three time forms differ on purpose and each is kept to the byte:

- `iso_timestamp`: the watcher's own times (events, API answers), milliseconds and `Z`;
- `rfc3339_micros`: Voltage's times (the simulator prints them), always six digits and `Z`;
- `rfc3339_utc`: a caller's datetime sent to Voltage as a query value, at its own precision.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_MICROS = 1_000_000


def iso_timestamp(at: float) -> str:
    """RFC 3339 with milliseconds and Z, the form every event and API answer uses."""
    stamp = datetime.fromtimestamp(at, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def rfc3339_micros(micros: int) -> str:
    """RFC 3339 in UTC with microseconds and `Z`, as Voltage prints timestamps."""
    seconds, fraction = divmod(micros, _MICROS)
    return f"{_rfc3339_second(seconds)}.{fraction:06d}Z"


@functools.lru_cache(maxsize=4096)
def _rfc3339_second(seconds: int) -> str:
    """The date and time to the second; cached, as a page's timestamps share few seconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339_utc(value: datetime, name: str = "date") -> str:
    """A timezone-aware datetime as RFC 3339 in UTC with a ``Z``; `name` is the argument's, for
    the error a naive or non-datetime value gets."""
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime")  # noqa: TRY004 - one error class for bad input
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def jittered(delay: float, fraction: float) -> float:
    """`delay` moved by up to `fraction` of itself either way, so timers set together spread."""
    return delay * (1 + random.uniform(-fraction, fraction))


def stretched(delay: float, fraction: float) -> float:
    """`delay` lengthened by up to `fraction` of itself: spread, but never sooner than asked."""
    return delay * (1 + random.uniform(0, fraction))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or None when it did not ask (or asked nonsense).

    ``x-retry-after-ms`` (milliseconds) wins over ``Retry-After``, which is either
    delay-seconds or an HTTP-date (RFC 9110); a date in the past means "now" (0.0).
    ``headers`` must look names up case-insensitively, as ``requests``' headers do. Both
    Voltage's answers and a webhook subscriber's are read with it.
    """
    millis = headers.get("x-retry-after-ms")
    if millis is not None:
        value = _non_negative_number(millis)
        if value is not None:
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    seconds = _non_negative_number(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are always GMT; asctime and "-0000" parse naive
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def _non_negative_number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def voltage_time(value: str | None) -> str | None:
    """A Voltage time as stored (Python's isoformat, `+00:00`) in the `Z` form every other time
    of an answer has, at Voltage's own precision."""
    if not value:
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # shown as Voltage sent it rather than not at all
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"
