"""What the watcher spends on Voltage, by purpose, and what that comes to for 3,600 s invoices.

The watcher counts every Voltage request it makes in its Redis counters hash as
`voltage_requests:<purpose>`. A deployment that does not count yet simply has no such fields:
every purpose then reads 0 and the breakdown still prints, with the simulator's own count next
to it to show the gap.

Extrapolation to Voltage's default 3,600 s invoices is plain arithmetic on the measured numbers.
Per-payment purposes (a create, its read-back, a confirm, an expiry check, a hint read) happen a
fixed number of times per payment whatever the expiry, so they carry over per payment. Time-based
ones (the list sweeps, and any per-payment polling) go on for as long as payments stay pending,
so they are scaled by how long a payment stays pending under the same mix. For the sweeps that
is an upper bound: a sweep costs the same whether one payment is pending or a thousand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.common import fmt, print_table

PREFIX = "voltage_requests:"
PURPOSES = (
    "create",
    "read_back",
    "adopt",
    "confirm",
    "sweep",
    "reconcile",
    "expiry_check",
    "fallback_poll",
    "hint",
    "poll",
    "other",
)
PER_PAYMENT = frozenset({"create", "read_back", "adopt", "confirm", "expiry_check", "hint"})
TIME_BASED = frozenset({"sweep", "reconcile", "fallback_poll", "poll"})
DEFAULT_EXPIRY = 3600.0  # what Voltage gives an invoice when the create names none


def by_purpose(counters: Mapping[str, int]) -> dict[str, int]:
    """Every known purpose (missing: 0), plus any the watcher counts that this list lacks."""
    counts = {p: int(counters.get(PREFIX + p, 0)) for p in PURPOSES}
    for key, value in counters.items():
        if key.startswith(PREFIX) and key[len(PREFIX) :] not in counts:
            counts[key[len(PREFIX) :]] = int(value)
    return counts


def minus(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def counted(counts: Mapping[str, int]) -> bool:
    """Did the watcher count anything at all (False before it learnt to)?"""
    return any(counts.values())


@dataclass(frozen=True)
class MixShape:
    """How long a payment stays pending under the realistic mix, as a function of expiry."""

    shares: tuple[float, float, float, float]  # paid early, paid late, expired, failed
    early: tuple[float, float]  # uniform offsets, seconds from creation
    late_from: float
    before_expiry: float

    def mean_pending(self, expiry: float) -> float:
        """Mean seconds from creation to the final status, by the plan's distributions."""
        early, late, expired, failed = self.shares
        paid_early = (self.early[0] + self.early[1]) / 2
        paid_late = (self.late_from + expiry - self.before_expiry) / 2
        failing = (1.0 + expiry - self.before_expiry) / 2
        return early * paid_early + late * paid_late + expired * expiry + failed * failing


def print_breakdown(
    title: str,
    counts: Mapping[str, int],
    payments: int,
    *,
    simulator_count: int | None,
    simulator_what: str,
) -> None:
    """Per purpose: requests and requests per payment; then the sum against the simulator's."""
    n = max(1, payments)
    rows = []
    for purpose, value in counts.items():
        kind = "per payment" if purpose in PER_PAYMENT else "time-based"
        if purpose not in PER_PAYMENT | TIME_BASED:
            kind = "unclassified"  # carried over per payment by the extrapolation
        rows.append([purpose, kind, str(value), fmt(value / n, 2)])
    total = sum(counts.values())
    rows.append(["sum", "", str(total), fmt(total / n, 2)])
    print_table(title, ["purpose", "kind", "requests", "per payment"], rows)
    if simulator_count is not None:
        gap = simulator_count - total
        print(
            f"  cross-check: the counters add up to {total}; the simulator counted "
            f"{simulator_count} ({simulator_what}); difference {gap:+d}"
            + ("" if counted(counts) else " (the watcher does not count by purpose yet)")
        )
    print()


@dataclass(frozen=True)
class Extrapolation:
    watcher: float | None  # None: the watcher does not count by purpose yet
    naive: float
    naive_never_paid: float


def print_extrapolation(
    counts: Mapping[str, int],
    payments: int,
    *,
    shape: MixShape,
    expiry: float,
    naive_create_requests: float,
    naive_interval: float,
) -> Extrapolation:
    """Per-payment cost at 3,600 s invoices, by arithmetic, with the formula shown."""
    n = max(1, payments)
    fixed = sum(v for p, v in counts.items() if p not in TIME_BASED) / n
    timed = sum(v for p, v in counts.items() if p in TIME_BASED) / n
    t_measured = shape.mean_pending(expiry)
    t_default = shape.mean_pending(DEFAULT_EXPIRY)
    scale = t_default / t_measured if t_measured else 0.0
    watcher = fixed + timed * scale
    naive = naive_create_requests + t_default / naive_interval
    never_paid = naive_create_requests + DEFAULT_EXPIRY / naive_interval
    e, late, x, f = shape.shares
    print(f"Extrapolated to Voltage's default {DEFAULT_EXPIRY:.0f} s invoices (arithmetic)")
    print(
        f"  T(E) = mean seconds pending under this mix = {e:g}*{sum(shape.early) / 2:g} + "
        f"{late:g}*({shape.late_from:g}+E-{shape.before_expiry:g})/2 + {x:g}*E + "
        f"{f:g}*(1+E-{shape.before_expiry:g})/2"
    )
    print(
        f"  T({expiry:.0f}) = {t_measured:,.1f} s (measured run); "
        f"T({DEFAULT_EXPIRY:.0f}) = {t_default:,.1f} s"
    )
    print(
        f"  watcher(3600) = per-payment purposes + time-based purposes * T(3600)/T(E) = "
        f"{fixed:.2f} + {timed:.2f} * {scale:.2f} = {watcher:.2f} requests per payment "
        f"(per payment: {', '.join(sorted(PER_PAYMENT))} and unclassified; time-based: "
        f"{', '.join(sorted(TIME_BASED))}; an upper bound for the sweeps, which cost the same "
        "however many payments are pending)"
        if counted(counts)
        else "  watcher(3600): not available, the watcher does not count requests by purpose yet"
    )
    print(
        f"  naive(3600) = create requests + T(3600)/{naive_interval:g} s = "
        f"{naive_create_requests:.2f} + {t_default / naive_interval:,.1f} = {naive:,.1f} "
        f"requests per payment; a never-paid {DEFAULT_EXPIRY:.0f} s invoice costs it "
        f"{naive_create_requests:.2f} + {DEFAULT_EXPIRY / naive_interval:,.0f} = "
        f"{never_paid:,.0f}"
    )
    known = watcher if counted(counts) else None
    ratio = known / naive if known is not None and naive else None
    print(f"  ratio watcher/naive at 3600 s: {fmt(ratio, 3)} (target <= 0.1)")
    print()
    return Extrapolation(known, naive, never_paid)
