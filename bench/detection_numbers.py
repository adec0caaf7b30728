"""The detection bench's arithmetic: latencies, and Voltage requests per side and per class.

Latency is measured twice for a watcher side: to the subscriber (the first verified webhook at
the bench's receiver: the headline, because that is when a shop can act) and to the watcher's
own outbox write (secondary, to see what delivery adds). The naive loop has no subscriber: it
acts the moment its GET answers final, so both are that moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.detection_plan import MIX_CLASSES, PhaseInfo
from bench.detection_sides import Side, WatcherSide


def latencies_ms(
    side: Side, only: Iterable[str] | None = None, *, at: str = "reported"
) -> list[float]:
    """Settle/fail answer -> reported (or detected); for payments left to expire, when `only`
    names them: the invoice's expiry instant -> reported."""
    seen = side.reported if at == "reported" else side.detected
    ids = side.acted_at.keys() if only is None else only
    values = []
    for pid in ids:
        if pid not in seen:
            continue
        if pid in side.acted_at:
            values.append((seen[pid] - side.acted_at[pid]) * 1000.0)
        elif pid in side.expires_at and only is not None:
            values.append((seen[pid] - side.expires_at[pid]) * 1000.0)
    return values


def expiry_latencies_ms(side: Side, *, at: str = "reported") -> list[float]:
    """Invoice expiry instant -> reported (or detected), for the payments left to expire."""
    pids = [pid for pid in side.checked() if side.expected.get(pid) == "expired"]
    return latencies_ms(side, [p for p in pids if p not in side.acted_at], at=at)


@dataclass
class Cost:
    total: int
    creates: int
    watching: int
    per_payment_gets: int
    list_calls: float
    pending_minutes: float


def cost_of(side: Side, stats: dict[str, Any], list_calls: float) -> Cost:
    """From the simulator's stats: this side's GETs by id, its creates, its list calls."""
    per_payment: dict[str, int] = stats.get("per_payment", {})
    gets = sum(per_payment.get(pid, 0) for pid in side.all_ids)
    create_gets = side.create_requests - side.create_posts
    watching = gets - create_gets + list_calls
    minutes = 0.0
    for pid, created in side.created_at.items():
        minutes += max(0.0, side.reported.get(pid, side.ended) - created) / 60.0
    return Cost(
        total=round(gets + list_calls + side.create_posts),
        creates=side.create_requests,
        watching=round(watching),
        per_payment_gets=gets,
        list_calls=list_calls,
        pending_minutes=minutes,
    )


def _list_weight(side: WatcherSide) -> int:
    counters = side.rt.store.counters()
    pages = counters.get("voltage_requests:sweep", 0) + counters.get(
        "voltage_requests:reconcile", 0
    )
    return max(0, pages or counters.get("sweeps", 0))


def list_shares(sides: Sequence[Side], phases: dict[str, PhaseInfo]) -> dict[str, float]:
    """List calls (GET /payments) per side: only watchers list. With two watcher deployments
    the simulator cannot tell whose a list call was, so the calls of a phase are shared by the
    list pages (or sweeps) each deployment counted."""
    shares: dict[str, float] = {}
    by_phase: dict[str, list[WatcherSide]] = {}
    for side in sides:
        shares[side.name] = 0.0
        if isinstance(side, WatcherSide):
            by_phase.setdefault(side.phase, []).append(side)
    for phase, watchers in by_phase.items():
        calls = int(phases[phase].stats.get("by_route", {}).get("GET /payments", 0))
        weights = [_list_weight(side) for side in watchers]
        for side, weight in zip(watchers, weights, strict=True):
            share = weight / sum(weights) if sum(weights) else 1 / len(weights)
            shares[side.name] = calls * share
    return shares


def age_split(side: Side, threshold: float) -> tuple[list[float], list[float]]:
    young = [pid for pid in side.acted_at if side.acted_at[pid] - side.created_at[pid] < threshold]
    old = [pid for pid in side.acted_at if side.acted_at[pid] - side.created_at[pid] >= threshold]
    return latencies_ms(side, young), latencies_ms(side, old)


@dataclass
class ClassCost:
    count: int
    requests: float  # per payment: its GETs + a share of creates and list calls
    gets: float  # per payment: GETs of the payment itself (create-time invoice reads included)


def class_costs(side: Side, stats: dict[str, Any], list_calls: float) -> dict[str, ClassCost]:
    """Voltage requests per payment for each class of the mix, and for all ("all")."""
    per_payment: dict[str, int] = stats.get("per_payment", {})
    created = max(1, len(side.ids))
    overhead = (side.create_posts + list_calls) / created  # the same for every payment
    groups: dict[str, list[str]] = {name: [] for name in MIX_CLASSES}
    for pid in side.all_ids:
        groups.setdefault(side.classes.get(pid, "?"), []).append(pid)
    groups["all"] = list(side.all_ids)
    costs = {}
    for name, pids in groups.items():
        gets = [per_payment.get(pid, 0) for pid in pids]
        mean = sum(gets) / len(gets) if gets else 0.0
        costs[name] = ClassCost(len(pids), mean + overhead if pids else 0.0, mean)
    return costs
