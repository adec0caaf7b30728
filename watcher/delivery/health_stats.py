"""A subscription's health over the last 24 hours, from hourly buckets the attempt write keeps.

`finish_attempt.lua` counts each attempt into its subscription's hash for that hour (attempts,
successes, one latency bucket, the hour's last failure), so a delivery costs no extra round
trip. Percentiles come from the fixed latency buckets the way Prometheus' `histogram_quantile`
estimates them: exact enough for a console, and a bucket hash stays a dozen small fields.
This module is pure arithmetic; `AttemptStore` writes and reads the hashes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HOUR = 3600
WINDOW_HOURS = 24
# A bucket outlives the window a little (refreshed on each write), then Redis forgets it.
BUCKET_TTL = (WINDOW_HOURS + 1) * HOUR
# Upper bounds (ms) of the latency buckets; a last, unbounded bucket takes the rest.
LATENCY_BOUNDS_MS: tuple[int, ...] = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
INF = "inf"
LATENCY_PREFIX = "le:"
ATTEMPTS, SUCCEEDED, LAST_FAILURE = "attempts", "succeeded", "last_failure"
ERROR_CHARS = 200  # of a failure's error text, kept for a person to read


def hour_of(now: float) -> int:
    """The hour a time falls in (unix hours): the bucket its attempts are counted in."""
    return int(now // HOUR)


def window_hours(now: float) -> list[int]:
    """The 24 hours counted at `now`: this one and the 23 before it."""
    current = hour_of(now)
    return list(range(current - WINDOW_HOURS + 1, current + 1))


def latency_field(latency_ms: float) -> str:
    """The bucket field a latency is counted in: `le:<bound>`, or `le:inf` above them all."""
    for bound in LATENCY_BOUNDS_MS:
        if latency_ms <= bound:
            return f"{LATENCY_PREFIX}{bound}"
    return f"{LATENCY_PREFIX}{INF}"


def failure_kind(status_code: int | None, error: str | None, refused: bool) -> str:
    """What kind of failure, for grouping in a console without parsing the error text."""
    if status_code is not None:
        return "http_status"
    if refused:
        return "refused_by_ssrf_guard"
    if error and error.startswith("timed out"):
        return "timeout"
    return "network"


def failure_record(attempt: Mapping[str, Any], now: float) -> str:
    """The JSON kept as the hour's last failure: when, what kind, the status code, the short
    error text. Never the response body or headers (a subscriber's secrets could be there)."""
    error = attempt.get("error")
    status_code = attempt.get("status_code")
    return json.dumps(
        {
            "at": attempt.get("at"),
            "ts": now,
            "kind": failure_kind(status_code, error, bool(attempt.get("refused_by_ssrf_guard"))),
            "status_code": status_code,
            "error": str(error)[:ERROR_CHARS] if error else None,
        }
    )


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """The q-quantile (0..1) of a histogram whose counts follow `LATENCY_BOUNDS_MS` plus the
    unbounded bucket, interpolated linearly inside its bucket (Prometheus' estimate); in the
    unbounded bucket, the highest bound. None for an empty histogram."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            lower = float(LATENCY_BOUNDS_MS[index - 1]) if index else 0.0
            upper = float(LATENCY_BOUNDS_MS[index])
            return round(lower + (upper - lower) * (rank - below) / count, 1)
        below += count
    return float(LATENCY_BOUNDS_MS[-1])  # not reached: the last non-empty bucket is at rank


@dataclass(frozen=True)
class LastFailure:
    at: str
    kind: str
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class HealthSummary:
    """What the console shows for one subscription over the window."""

    since: float
    attempts: int
    succeeded: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    last_failure: LastFailure | None

    @property
    def failed(self) -> int:
        return self.attempts - self.succeeded

    @property
    def success_rate(self) -> float | None:
        return round(self.succeeded / self.attempts, 4) if self.attempts else None


def _count(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


def _latest_failure(buckets: Sequence[Mapping[str, str]], since: float) -> LastFailure | None:
    best: dict[str, Any] | None = None
    for bucket in buckets:
        try:
            found = json.loads(bucket.get(LAST_FAILURE) or "null")
        except ValueError:
            continue
        if not isinstance(found, dict) or not isinstance(found.get("ts"), int | float):
            continue
        if found["ts"] >= since and (best is None or found["ts"] > best["ts"]):
            best = found
    if best is None:
        return None
    code = best.get("status_code")
    return LastFailure(
        at=str(best.get("at") or ""),
        kind=str(best.get("kind") or "network"),
        status_code=code if isinstance(code, int) else None,
        error=best.get("error") or None,
    )


def summarize(hours: Mapping[int, Mapping[str, str]], now: float) -> HealthSummary:
    """Sum the buckets of the window ending at `now` (by unix hour); older ones are ignored,
    whatever Redis still holds."""
    counted = [hours[h] for h in window_hours(now) if h in hours]
    fields = [f"{LATENCY_PREFIX}{b}" for b in (*LATENCY_BOUNDS_MS, INF)]
    histogram = [sum(_count(b.get(f)) for b in counted) for f in fields]
    attempts = sum(_count(b.get(ATTEMPTS)) for b in counted)
    succeeded = min(sum(_count(b.get(SUCCEEDED)) for b in counted), attempts)
    since = float(window_hours(now)[0] * HOUR)
    return HealthSummary(
        since=since,
        attempts=attempts,
        succeeded=succeeded,
        latency_p50_ms=quantile(0.5, histogram),
        latency_p99_ms=quantile(0.99, histogram),
        last_failure=_latest_failure(counted, since),
    )
