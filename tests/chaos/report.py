"""What a fault-suite run proves, computed from the simulator's truth, the outbox and what each
subscriber actually received; and the printout."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.chaos.failover import FailoverReport
from tests.chaos.hanging import HangingReport
from tests.chaos.plan import EVENT_OF_STATUS, PlannedPayment, SubscriberSpec
from tests.chaos.subscribers import Receipt
from watcher.voltage.purpose import Purpose

FINAL = frozenset(EVENT_OF_STATUS)
# The watcher's own counters worth a line: did the fallback happen, what did reconciliation
# find that the fast sweep missed, how often was a list report not borne out by the read.
DETECTION_COUNTERS = (
    "fallback_entries",
    "fallback_exits",
    "reconcile_confirmed",
    "confirm_unconfirmed",
    "reconcile_passes",
    "reconcile_pages",
    "list_errors:sweep",
    "list_errors:reconcile",
)


@dataclass(frozen=True)
class OutboxEvent:
    entry_ms: int  # the XADD time: when the watcher knew
    event_id: str
    event_type: str
    payment_id: str


@dataclass
class SubscriberResult:
    name: str
    expected: int = 0
    delivered: int = 0
    duplicated: int = 0  # accepted again under a webhook-id already accepted
    attempts: int = 0  # every request, refused and hung ones included
    lost: int = 0
    unverified: int = 0  # a request whose signature did not verify
    unexpected: int = 0  # a webhook-id this subscriber should never have got
    conflicting: int = 0  # one webhook-id, two different bodies
    worst_delay: float | None = None  # event written -> first accepted request


@dataclass
class ChaosReport:
    payments: int = 0
    final_by_status: Counter[str] = field(default_factory=Counter)
    not_final: int = 0  # still pending on the simulator at the end (a harness problem)
    events_expected: int = 0
    events_emitted: int = 0
    events_duplicated: int = 0  # a second outbox event for the same payment
    events_missing: int = 0
    events_wrong: int = 0  # wrong type for the final status, or for a payment not final
    worst_detection: float | None = None  # settled/failed on Voltage -> event (seconds)
    worst_expiry_detection: float | None = None  # invoice expiry -> event
    median_detection: float | None = None  # settle/fail -> event, all payments
    slowest_detections: list[tuple[str, tuple[float, float]]] = field(default_factory=list)
    subscribers: list[SubscriberResult] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    harness_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    hidden_by_status: Counter[str] = field(default_factory=Counter)  # hidden, final, announced
    hidden_planned: int = 0
    watcher_counters: dict[str, int] = field(default_factory=dict)  # Redis, at the end
    hanging: HangingReport | None = None  # the default-layout phase, run after the faults
    failover: FailoverReport | None = None  # long mode: the Sentinel failover phase

    @property
    def deliveries_expected(self) -> int:
        return sum(s.expected for s in self.subscribers)

    @property
    def deliveries_delivered(self) -> int:
        return sum(s.delivered for s in self.subscribers)

    @property
    def deliveries_duplicated(self) -> int:
        return sum(s.duplicated for s in self.subscribers)

    @property
    def deliveries_lost(self) -> int:
        return sum(s.lost for s in self.subscribers)

    def problems(self) -> list[str]:
        """Everything that breaks the promise; empty when the run proves it."""
        found = list(self.harness_errors)
        if self.not_final:
            found.append(f"{self.not_final} payments never became final on the simulator")
        for name in ("events_duplicated", "events_missing", "events_wrong"):
            if getattr(self, name):
                found.append(f"{name} = {getattr(self, name)}")
        for sub in self.subscribers:
            for name in ("lost", "unverified", "unexpected", "conflicting"):
                if getattr(sub, name):
                    found.append(f"subscriber {sub.name}: {name} = {getattr(sub, name)}")
        for phase in (self.hanging, self.failover):
            if phase is not None:
                found += phase.problems()
        return found

    def format(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.final_by_status.items()))
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        lines = [
            f"fault suite: {self.payments} payments ({statuses}) in {self.seconds:.0f} s",
            f"faults: {faults}",
            f"events: expected {self.events_expected}, emitted {self.events_emitted}, "
            f"duplicated {self.events_duplicated}, missing {self.events_missing}, "
            f"wrong {self.events_wrong}",
            f"deliveries: expected {self.deliveries_expected}, "
            f"delivered {self.deliveries_delivered}, duplicated {self.deliveries_duplicated} "
            f"(same webhook-id), lost {self.deliveries_lost}",
            f"detection delay: median {_s(self.median_detection)}, "
            f"worst {_s(self.worst_detection)} after settle/fail, "
            f"{_s(self.worst_expiry_detection)} after invoice expiry",
            f"hidden from filtered lists: {self.hidden_planned} planned, announced "
            f"{sum(self.hidden_by_status.values())} ({_counts(self.hidden_by_status)})",
            *self._counter_lines(),
            "",
            f"{'subscriber':<18}{'expected':>9}{'delivered':>10}{'dup':>6}{'attempts':>9}"
            f"{'lost':>6}{'bad sig':>8}{'worst delay':>13}",
        ]
        lines += [
            f"{s.name:<18}{s.expected:>9}{s.delivered:>10}{s.duplicated:>6}{s.attempts:>9}"
            f"{s.lost:>6}{s.unverified:>8}{_s(s.worst_delay):>13}"
            for s in self.subscribers
        ]
        for phase in (self.hanging, self.failover):
            if phase is not None:
                lines += ["", phase.format()]
        problems = self.problems()
        lines.append("")
        lines.append("PROBLEMS: " + "; ".join(problems) if problems else "lost = 0: no problems")
        return "\n".join(lines)

    def _counter_lines(self) -> list[str]:
        if not self.watcher_counters:
            return []
        counters = self.watcher_counters
        requests = {p.value: counters.get(f"voltage_requests:{p.value}", 0) for p in Purpose}
        total = sum(requests.values())
        detection = {name: counters.get(name, 0) for name in DETECTION_COUNTERS}
        return [
            f"voltage requests by purpose: {_counts(requests, sort=False)} (total {total})",
            f"watcher detection: {_counts(detection, sort=False)}",
        ]


def _counts(counts: Mapping[str, int], *, sort: bool = True) -> str:
    items = sorted(counts.items()) if sort else list(counts.items())
    return ", ".join(f"{k} {v}" for k, v in items)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _final_at(payment: Mapping[str, Any]) -> float:
    """When the payment became final: its last history event keeps the true time, where
    `updated_at` may have been back-dated (`updated_at_backdate`)."""
    history = payment.get("sim", {}).get("history") or []
    if history:
        return _epoch(history[-1]["time"])
    return _epoch(payment["updated_at"])


def build_report(
    *,
    planned: Mapping[str, PlannedPayment],
    simulator_payments: Iterable[Mapping[str, Any]],
    outbox: Iterable[OutboxEvent],
    subscribers: Iterable[tuple[SubscriberSpec, list[Receipt]]],
) -> ChaosReport:
    report = ChaosReport(payments=len(planned))
    truth = {p["id"]: p for p in simulator_payments if p["id"] in planned}
    finals = {pid: p for pid, p in truth.items() if p["status"] in FINAL}
    report.final_by_status = Counter(p["status"] for p in finals.values())
    report.not_final = len(planned) - len(finals)
    report.events_expected = len(finals)

    by_payment: dict[str, list[OutboxEvent]] = defaultdict(list)
    for event in outbox:
        if event.payment_id in planned:
            by_payment[event.payment_id].append(event)
    report.events_emitted = sum(len(v) for v in by_payment.values())
    report.events_duplicated = sum(len(v) - 1 for v in by_payment.values() if len(v) > 1)
    report.events_missing = len(set(finals) - set(by_payment))
    first_event: dict[str, OutboxEvent] = {}
    delays: list[tuple[str, tuple[float, float]]] = []
    for pid, events in by_payment.items():
        first = min(events, key=lambda e: e.entry_ms)
        first_event[pid] = first
        payment = finals.get(pid)
        if payment is None or any(
            e.event_type != EVENT_OF_STATUS[payment["status"]] for e in events
        ):
            report.events_wrong += 1
            continue
        final_at = _final_at(payment)
        delay = first.entry_ms / 1000 - final_at
        delays.append((pid, (delay, final_at)))
        if payment["status"] == "expired":
            report.worst_expiry_detection = max(report.worst_expiry_detection or 0.0, delay)
        else:
            report.worst_detection = max(report.worst_detection or 0.0, delay)

    delays.sort(key=lambda item: item[1][0])
    paid_or_failed = [d for pid, (d, _) in delays if finals[pid]["status"] != "expired"]
    if paid_or_failed:
        report.median_detection = paid_or_failed[len(paid_or_failed) // 2]
    report.slowest_detections = delays[-5:]
    hidden = [pid for pid, p in planned.items() if p.hidden]
    report.hidden_planned = len(hidden)
    report.hidden_by_status = Counter(
        finals[pid]["status"] for pid in hidden if pid in finals and pid in by_payment
    )
    events_by_id = {e.event_id: e for e in first_event.values()}
    for spec, receipts in subscribers:
        wanted = {
            first_event[pid].event_id
            for pid, payment in finals.items()
            if pid in first_event
            and spec.wants(EVENT_OF_STATUS[payment["status"]], planned[pid].shop)
        }
        # An event the watcher never emitted is counted once, under events_missing, and again
        # here as lost for every subscriber that should have had it.
        missing = sum(
            1
            for pid, payment in finals.items()
            if pid not in first_event
            and spec.wants(EVENT_OF_STATUS[payment["status"]], planned[pid].shop)
        )
        report.subscribers.append(_subscriber_result(spec, receipts, wanted, missing, events_by_id))
    return report


def _subscriber_result(
    spec: SubscriberSpec,
    receipts: list[Receipt],
    wanted: set[str],
    missing: int,
    events_by_id: Mapping[str, OutboxEvent],
) -> SubscriberResult:
    result = SubscriberResult(name=spec.name, expected=len(wanted) + missing)
    result.attempts = len(receipts)
    bodies: dict[str, bytes] = {}
    accepted_at: dict[str, float] = {}
    for receipt in sorted(receipts, key=lambda r: r.at):
        result.unverified += not receipt.verified
        if receipt.webhook_id not in wanted:
            result.unexpected += 1
            continue
        if bodies.setdefault(receipt.webhook_id, receipt.body) != receipt.body:
            result.conflicting += 1
        if not _body_matches(receipt.body, events_by_id[receipt.webhook_id]):
            result.conflicting += 1
        if receipt.accepted:
            if receipt.webhook_id in accepted_at:
                result.duplicated += 1
            else:
                accepted_at[receipt.webhook_id] = receipt.at
    result.delivered = len(accepted_at)
    result.lost = result.expected - result.delivered
    delays = [at - events_by_id[wid].entry_ms / 1000 for wid, at in accepted_at.items()]
    result.worst_delay = max(delays) if delays else None
    return result


def _body_matches(body: bytes, event: OutboxEvent) -> bool:
    """The body announces the event it is signed for: same type, same payment."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return bool(
        parsed.get("type") == event.event_type
        and parsed.get("data", {}).get("payment_id") == event.payment_id
    )
