"""The detection bench's parameters and its random plan: what happens to payment i, and when.

The plan is index-aligned for every side, so the watcher, the watcher with hints and the naive
loop see the same settles, fails and expiries at the same offsets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTED = {"settle": "completed", "fail": "failed"}

# The realistic mix. Offsets count from each payment's creation.
PAID_EARLY = "paid_early"
PAID_LATE = "paid_late"
EXPIRED = "expired"
FAILED = "failed"
MIX_CLASSES = (PAID_EARLY, PAID_LATE, EXPIRED, FAILED)
CLASS_LABELS = {
    PAID_EARLY: "paid within 60 s",
    PAID_LATE: "paid after 60 s",
    EXPIRED: "never paid: expired",
    FAILED: "failed",
}
CLASS_EXPECTED = {
    PAID_EARLY: "completed",
    PAID_LATE: "completed",
    EXPIRED: "expired",
    FAILED: "failed",
}
DEFAULT_MIX_SHARES = (0.55, 0.15, 0.25, 0.05)
FIRST_MINUTE = 60.0
EARLY_OFFSETS = (1.0, FIRST_MINUTE - 5.0)
LATE_FROM = FIRST_MINUTE + 2.0
BEFORE_EXPIRY = 15.0  # late payments and failures happen at least this long before expiry
MIN_EXPIRATION = 80


@dataclass(frozen=True)
class Params:
    payments: int
    settle_share: float
    fail_share: float
    duration: float
    drain_timeout: float
    seed: int
    mode: str
    naive_interval: float
    naive_threads: int
    worker_concurrency: int | None  # None: the Procfile's default (one child per CPU)
    create_threads: int
    create_over: float
    poll_schedule: str | None
    sweep_interval: str | None
    dispatch_interval: str | None
    keep: bool
    hint: bool = False
    mix: bool = False
    expiration: int | None = None
    mix_shares: tuple[float, float, float, float] = DEFAULT_MIX_SHARES
    json_path: Path | None = None


@dataclass(frozen=True)
class Plan:
    """Index-aligned for every side: payment i gets actions[i] at offsets[i] (or nothing) and
    must end as expected[i] (None: stays pending, no event allowed)."""

    offsets: list[float]
    actions: list[str | None]
    classes: list[str]
    expected: list[str | None]
    from_creation: bool  # offsets count from each payment's creation (mix), else from t0


def make_plan(params: Params, rng: random.Random) -> Plan:
    if params.mix:
        return make_mix_plan(params, rng)
    n = params.payments
    settle_n = round(n * params.settle_share)
    fail_n = min(round(n * params.fail_share), n - settle_n)
    chosen = rng.sample(range(n), settle_n + fail_n)
    actions: list[str | None] = [None] * n
    for position, index in enumerate(chosen):
        actions[index] = "settle" if position < settle_n else "fail"
    offsets = [rng.uniform(0.0, params.duration) for _ in range(n)]
    classes = [{"settle": "settled", "fail": "failed"}.get(a or "", "untouched") for a in actions]
    expected = [EXPECTED[a] if a else None for a in actions]
    return Plan(offsets, actions, classes, expected, from_creation=False)


def mix_counts(n: int, shares: Sequence[float]) -> list[int]:
    """Shares of n as whole payments that add up to n (largest remainders)."""
    raw = [n * s for s in shares]
    counts = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def make_mix_plan(params: Params, rng: random.Random) -> Plan:
    expiration = float(params.expiration or 0)
    classes = [
        name
        for name, count in zip(
            MIX_CLASSES, mix_counts(params.payments, params.mix_shares), strict=True
        )
        for _ in range(count)
    ]
    rng.shuffle(classes)
    offsets: list[float] = []
    actions: list[str | None] = []
    for name in classes:
        if name == PAID_EARLY:
            offsets.append(rng.uniform(*EARLY_OFFSETS))
        elif name == PAID_LATE:
            offsets.append(rng.uniform(LATE_FROM, expiration - BEFORE_EXPIRY))
        elif name == FAILED:
            offsets.append(rng.uniform(1.0, expiration - BEFORE_EXPIRY))
        else:
            offsets.append(expiration)
        actions.append({PAID_EARLY: "settle", PAID_LATE: "settle", FAILED: "fail"}.get(name))
    expected: list[str | None] = [CLASS_EXPECTED[name] for name in classes]
    return Plan(offsets, actions, classes, expected, from_creation=True)


@dataclass
class PhaseInfo:
    """What one measured phase did, besides the payments: timings and the simulator's stats."""

    label: str
    settle_lateness_max: float = 0.0  # the latest settle/fail call, behind its planned instant
    stats: dict[str, Any] = field(default_factory=dict)  # GET /_sim/stats at the phase's end
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # side -> its counters
    posts_during_creates: int = 0
    create_seconds: float = 0.0
    create_lag_max: float = 0.0  # the latest create, behind its paced instant
