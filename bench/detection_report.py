"""The detection bench's report: latencies, Voltage requests per side, class and purpose, the
3,600 s arithmetic, the diagnostics, and the flat JSON for `--json`.

Latency is measured twice for a watcher side: to the subscriber (the first verified webhook at
the bench's receiver: the headline, because that is when a shop can act) and to the watcher's
own outbox write (to see what delivery adds). The naive loop acts the moment its GET answers
final, so both are that moment. Extrapolation to 3,600 s invoices is plain arithmetic: purposes
that happen a fixed number of times per payment carry over per payment; time-based ones (sweeps,
polling) scale with how long a payment stays pending under the same mix (for sweeps an upper
bound: one costs the same whether one payment is pending or a thousand).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bench import harness as h
from bench.detection import (
    BEFORE_EXPIRY,
    CLASS_EXPECTED,
    CLASS_LABELS,
    EARLY_OFFSETS,
    FIRST_MINUTE,
    LATE_FROM,
    MIX_CLASSES,
    NAIVE_WALLET,
    WALLETS,
    HintSide,
    NaiveSide,
    Side,
    WatcherSide,
    mix_counts,
)
from bench.harness import fmt, percentile
from watcher.api.ingress import INGRESS_ROUTE

PER_PAYMENT = frozenset({"create", "read_back", "adopt", "confirm", "expiry_check", "hint"})
TIME_BASED = frozenset({"sweep", "reconcile", "fallback_poll", "poll"})
DEFAULT_EXPIRY = 3600.0  # what Voltage gives an invoice when the create names none
SHOWN_SETTINGS = (
    "watcher_sweep_interval", "watcher_sweep_overlap", "watcher_sweep_max_pages",
    "watcher_reconcile_interval", "watcher_reconcile_page_interval",
    "watcher_poll_sparse_interval", "watcher_fallback_after", "watcher_dispatch_interval",
    "watcher_generating_poll_interval", "watcher_expiry_grace", "watcher_webhook_max_in_flight",
)  # fmt: skip
Phase = dict[str, Any]


# --- the numbers ------------------------------------------------------------------------------


def latencies_ms(
    side: Side, only: Iterable[str] | None = None, at: str = "reported"
) -> list[float]:
    """Settle/fail answer -> reported (or detected); for payments left to expire, when `only`
    names them: the invoice's expiry instant -> reported."""
    seen = side.reported if at == "reported" else side.detected
    start = {**(side.expires_at if only is not None else {}), **side.acted_at}
    ids = side.acted_at.keys() if only is None else only
    return [(seen[p] - start[p]) * 1000.0 for p in ids if p in seen and p in start]


def expiry_ms(side: Side, at: str = "reported") -> list[float]:
    """Invoice expiry instant -> reported (or detected), for the payments left to expire."""
    pids = [p for p in side.checked() if side.expected[p] == "expired" and p not in side.acted_at]
    return latencies_ms(side, pids, at)


def of_class(side: Side, name: str) -> list[str]:
    return [pid for pid in side.checked() if side.classes.get(pid) == name]


def trio(values: list[float]) -> str:
    top = max(values) if values else None
    return f"{fmt(percentile(values, 50))} / {fmt(percentile(values, 99))} / {fmt(top)}"


def list_shares(sides: list[Side], phases: dict[str, Phase]) -> dict[str, float]:
    """List calls (GET /payments) per side: only watchers list. With two watcher deployments
    the simulator cannot tell whose a list call was, so a phase's calls are shared by the list
    pages (or sweeps) each deployment counted."""
    shares = {side.name: 0.0 for side in sides}
    for label, phase in phases.items():
        watchers = [s for s in sides if isinstance(s, WatcherSide) and s.phase == label]
        calls = int(phase["stats"].get("by_route", {}).get("GET /payments", 0))
        weights = []
        for side in watchers:
            c = phase["counters"].get(side.name, {})
            pages = c.get("voltage_requests:sweep", 0) + c.get("voltage_requests:reconcile", 0)
            weights.append(max(0, pages or c.get("sweeps", 0)))
        for side, weight in zip(watchers, weights, strict=True):
            shares[side.name] = calls * (
                weight / sum(weights) if sum(weights) else 1 / len(weights)
            )
    return shares


def cost_of(side: Side, stats: dict[str, Any], list_calls: float) -> dict[str, float]:
    """From the simulator's stats: this side's GETs by id, its creates, its list calls."""
    per_payment: dict[str, int] = stats.get("per_payment", {})
    gets = sum(per_payment.get(pid, 0) for pid in side.ids.values())
    watching = gets - (side.create_requests - side.create_posts) + list_calls
    minutes = sum(max(0.0, side.reported.get(p, side.ended) - c) / 60.0
                  for p, c in side.created_at.items())  # fmt: skip
    return {"total": round(gets + list_calls + side.create_posts), "gets": gets,
            "watching": round(watching), "list_calls": list_calls, "minutes": minutes}  # fmt: skip


def class_costs(side: Side, stats: dict[str, Any], list_calls: float) -> dict[str, Any]:
    """Voltage requests per payment for each class of the mix, and for all ("all"): its own
    GETs, plus creates and list calls shared out evenly."""
    per_payment: dict[str, int] = stats.get("per_payment", {})
    overhead = (side.create_posts + list_calls) / max(1, len(side.ids))
    groups: dict[str, list[str]] = {name: [] for name in MIX_CLASSES}
    for pid in side.ids.values():
        groups.setdefault(side.classes.get(pid, "?"), []).append(pid)
    groups["all"] = list(side.ids.values())
    costs = {}
    for name, pids in groups.items():
        mean = sum(per_payment.get(p, 0) for p in pids) / len(pids) if pids else 0.0
        costs[name] = (len(pids), mean + overhead if pids else 0.0)
    return costs


def mean_pending(shares: tuple[float, ...], expiry: float) -> float:
    """Mean seconds from creation to the final status, by the mix plan's distributions."""
    early, late, expired, failed = shares
    return (early * sum(EARLY_OFFSETS) / 2 + late * (LATE_FROM + expiry - BEFORE_EXPIRY) / 2
            + expired * expiry + failed * (1.0 + expiry - BEFORE_EXPIRY) / 2)  # fmt: skip


# --- the report -------------------------------------------------------------------------------


def print_header(a: Any, settings: Any, sides: list[Side]) -> None:
    labels = [s.label for s in sides]
    together = " and ".join(labels) if len(labels) < 3 else ", ".join(labels[:-1])
    together += f" and {labels[-1]}" if len(labels) > 2 else ""
    mode = (f"concurrent: {together} created, settled and watched in the same time window"
            if a.mode == "concurrent" else "sequential: watcher phase, then Celery stopped, "
            "then naive phase (same simulator)")  # fmt: skip
    creates = f"creates as fast as {a.create_threads} threads go"
    if a.create_over:
        creates = f"creates paced over {a.create_over:g}s on {a.create_threads} threads"
    print(f"mode: {mode}")
    if a.mix:
        counts = mix_counts(a.payments, a.mix_shares)
        named = zip(MIX_CLASSES, a.mix_shares, counts, strict=True)
        shares = ", ".join(f"{CLASS_LABELS[n]} {s:.0%} ({c})" for n, s, c in named)
        late_to = a.expiration - BEFORE_EXPIRY
        print(
            f"parameters: realistic mix, payments={a.payments} per side, {creates}, invoice "
            f"expiration={a.expiration}s (the simulator expires them by itself), shares: "
            f"{shares}; offsets from each payment's creation: paid within 60 s uniform "
            f"{EARLY_OFFSETS[0]:g}-{EARLY_OFFSETS[1]:g}s, paid later {LATE_FROM:g}-{late_to:g}s, "
            f"failed 1-{late_to:g}s; drain timeout={a.drain_timeout:.0f}s after the last "
            f"expiry, seed={a.seed}"
        )
    else:
        print(
            f"parameters: payments={a.payments} per side, {creates}, settle_share="
            f"{a.settle_share}, fail_share={a.fail_share}, settle window={a.duration:.0f}s "
            "(uniform, same offsets for every side), drain timeout="
            f"{a.drain_timeout:.0f}s, seed={a.seed}"
        )
    overridden = {"watcher_sweep_interval": a.sweep_interval,
                  "watcher_dispatch_interval": a.dispatch_interval}  # fmt: skip
    parts = [f"{n.upper()}={getattr(settings, n)}{'' if overridden.get(n) else '*'}"
             for n in SHOWN_SETTINGS if hasattr(settings, n)]  # fmt: skip
    parts += [f"WATCHER_POLL_SCHEDULE={a.poll_schedule}"] if a.poll_schedule else []
    layout = f"--concurrency {a.worker_concurrency}" if a.worker_concurrency else "concurrency "
    layout += "" if a.worker_concurrency else "= CPU count"
    print(
        "watcher: " + ", ".join(parts) + " (* = production default); worker: the Procfile's "
        f"`celery -A watcher worker --loglevel INFO` (prefork, {layout}) + `celery -A watcher "
        "beat`; one subscription per deployment to the bench's receiver on loopback"
    )
    if a.hint:
        print(
            "watcher+hint: the same settings in a second deployment (Redis db 1, its own "
            f"worker and beat, wallet {WALLETS['hint']}) plus `watcher api` with "
            "VOLTAGE_WEBHOOK_SECRET; right after each settle/fail answers, the bench POSTs "
            "Voltage's signed webhook {type: receive, detail: {event, data: payment}} to "
            f"/v1{INGRESS_ROUTE}"
        )
    print(
        f"naive: GET every pending payment every {a.naive_interval:g}s ({a.naive_threads} "
        f"threads, plain requests.Session), wallet {NAIVE_WALLET}\nlatency = the first "
        "verified webhook at the subscriber (Standard Webhooks signature checked with the "
        "`standardwebhooks` package) - the settle/fail call's answer; 'detected' = the "
        "watcher's outbox write (XADD ms); naive: its first final GET is both\n"
    )


def side_rows(side: Side, cost: dict[str, float], mix: bool) -> list[tuple[str, str]]:
    lat, outbox, n = latencies_ms(side), latencies_ms(side, at="detected"), max(1, len(side.ids))
    acted = [side.actions[p] for p in side.acted_at if p in side.actions]
    errors = f" ({side.create_errors} failed)" if side.create_errors else ""
    expiring = sum(1 for p in side.checked() if side.expected[p] == "expired")
    reported = sum(1 for p in side.checked() if side.expected[p] and p in side.reported)
    return [("payments created", f"{len(side.ids)}{errors}"),
            ("settled (completed)", str(acted.count("settle"))),
            ("failed on purpose", str(acted.count("fail"))),
            *([("left to expire", str(expiring))] if mix else []),
            ("reported", str(reported)), ("missed", str(len(side.undetected()))),
            ("wrong final status", str(len(side.wrong()))),
            ("events for untouched payments", str(len(side.unexpected()))),
            ("reported twice (distinct ids)", str(len(side.duplicates()))),
            ("redeliveries (same webhook-id)",
             str(side.redeliveries) if side.name != "naive" else "-"),
            ("latency p50 (ms)", fmt(percentile(lat, 50))),
            ("latency p99 (ms)", fmt(percentile(lat, 99))),
            ("latency max (ms)", fmt(max(lat) if lat else None)),
            ("latency mean (ms)", fmt(sum(lat) / len(lat) if lat else None)),
            ("detected p50/p99/max (ms)", trio(outbox)),
            *([("expiry -> webhook p50/p99/max", trio(expiry_ms(side)))] if mix else []),
            ("Voltage requests (simulator)", str(cost["total"])),
            ("  requests / payment", fmt(cost["total"] / n, 2)),
            ("  creates / payment (POST+invoice GETs)", fmt(side.create_requests / n, 2)),
            ("  watching / payment (GETs + lists)", fmt(cost["watching"] / n, 2)),
            ("  of which list calls (GET /payments)", fmt(cost["list_calls"])),
            ("pending payment-minutes", fmt(cost["minutes"], 1)),
            ("run duration (s)", fmt(side.ended - side.started, 1))]  # fmt: skip


def mix_report(a: Any, sides: list[Side], costs: dict[str, dict[str, Any]]) -> None:
    naive, others = sides[-1], sides[:-1]
    rows = []
    for name in (*MIX_CLASSES, "all"):
        theirs = costs[naive.name][name][1]
        row = [CLASS_LABELS.get(name, name), str(costs[sides[0].name][name][0])]
        row += [fmt(costs[s.name][name][1], 1) for s in sides]
        rows.append(row + [f"{costs[s.name][name][1] / theirs:.2f}" if theirs else "-"
                           for s in others])  # fmt: skip
    h.print_table(
        f"Realistic mix: Voltage requests per payment by class (expiration {a.expiration}s; "
        "simulator counts: each payment's own GETs, plus creates and list calls shared out "
        "evenly)",
        ["class", "payments", *(f"{s.label} req/payment" for s in sides),
         *(f"{s.label}/naive" for s in others)], rows,
    )  # fmt: skip
    rows = [[CLASS_LABELS[n], *(trio(latencies_ms(s, of_class(s, n))) for s in sides)]
            for n in MIX_CLASSES]  # fmt: skip
    h.print_table(
        "Realistic mix: latency at the subscriber by class, p50 / p99 / max ms (from the "
        "settle/fail answer; for expired ones from the invoice's expiry instant)",
        ["class", *(s.label for s in sides)], rows,
    )  # fmt: skip
    rows = []
    for name in MIX_CLASSES:
        want = CLASS_EXPECTED[name]
        rows.append([f"{CLASS_LABELS[name]} -> {want}", *(
            f"{sum(1 for p in of_class(s, name) if s.reported_status.get(p) == want)}/"
            f"{len(of_class(s, name))}" for s in sides)])  # fmt: skip
    title = "Realistic mix: payments that reached the right final status"
    h.print_table(title, ["class -> status", *(s.label for s in sides)], rows)


def print_breakdown(side: Side, counts: Mapping[str, int], sim_count: int | None) -> None:
    """Per purpose: requests and requests per payment; then the sum against the simulator's."""
    n = max(1, len(side.ids))
    rows = [[p, "per payment" if p in PER_PAYMENT else "time-based" if p in TIME_BASED
             else "unclassified", str(v), fmt(v / n, 2)] for p, v in counts.items()]  # fmt: skip
    total = sum(counts.values())
    rows.append(["sum", "", str(total), fmt(total / n, 2)])
    title = f"Voltage requests by purpose, {side.label} (its Redis counters)"
    h.print_table(title, ["purpose", "kind", "requests", "per payment"], rows)
    if sim_count is not None:
        print(
            f"  cross-check: the counters add up to {total}; the simulator counted {sim_count} "
            f"(all /v1 requests minus the naive side's own); difference {sim_count - total:+d}"
            + ("" if total else " (the watcher does not count by purpose yet)")
        )
    print()


def extrapolate(a: Any, counts: Mapping[str, int], n: int, naive_creates: float) -> Any:
    """Per-payment cost at 3,600 s invoices, by arithmetic, with the formula shown."""
    n = max(1, n)
    fixed = sum(v for p, v in counts.items() if p not in TIME_BASED) / n
    timed = sum(v for p, v in counts.items() if p in TIME_BASED) / n
    measured, default = mean_pending(a.mix_shares, a.expiration), mean_pending(a.mix_shares, 3600)
    scale = default / measured if measured else 0.0
    watcher = fixed + timed * scale if any(counts.values()) else None
    interval = a.naive_interval
    naive = naive_creates + default / interval
    never_paid = naive_creates + DEFAULT_EXPIRY / interval
    e, late, x, f = a.mix_shares
    print(
        "Extrapolated to Voltage's default 3600 s invoices (arithmetic)\n"
        f"  T(E) = mean seconds pending under this mix = {e:g}*{sum(EARLY_OFFSETS) / 2:g} + "
        f"{late:g}*({LATE_FROM:g}+E-{BEFORE_EXPIRY:g})/2 + {x:g}*E + "
        f"{f:g}*(1+E-{BEFORE_EXPIRY:g})/2\n  T({a.expiration:.0f}) = {measured:,.1f} s "
        f"(measured run); T(3600) = {default:,.1f} s"
    )
    print(
        f"  watcher(3600) = per-payment purposes + time-based purposes * T(3600)/T(E) = "
        f"{fixed:.2f} + {timed:.2f} * {scale:.2f} = {watcher:.2f} requests per payment (per "
        f"payment: {', '.join(sorted(PER_PAYMENT))} and unclassified; time-based: "
        f"{', '.join(sorted(TIME_BASED))}; an upper bound for the sweeps, which cost the same "
        "however many payments are pending)"
        if watcher is not None
        else "  watcher(3600): not available, the watcher does not count requests by purpose yet"
    )
    ratio = watcher / naive if watcher is not None and naive else None
    print(
        f"  naive(3600) = create requests + T(3600)/{interval:g} s = {naive_creates:.2f} + "
        f"{default / interval:,.1f} = {naive:,.1f} requests per payment; a never-paid 3600 s "
        f"invoice costs it {naive_creates:.2f} + {DEFAULT_EXPIRY / interval:,.0f} = "
        f"{never_paid:,.0f}\n  ratio watcher/naive at 3600 s: {fmt(ratio, 3)} (target <= 0.1)\n"
    )
    return watcher, naive, never_paid


def cost_section(a: Any, sides: list[Side], phases: list[Phase], costs: dict[str, Any]) -> Any:
    """Requests per payment (counters by purpose, checked against the simulator), the ratio to
    the naive loop, and the 3,600 s arithmetic (mix only)."""
    naive = next(s for s in sides if isinstance(s, NaiveSide))
    watchers = [s for s in sides if isinstance(s, WatcherSide)]
    sim_total = int(phases[-1]["stats"].get("requests", 0))  # cumulative over the phases
    naive_requests, by_phase = naive.requests_made, {p["label"]: p for p in phases}
    purposes = {s.name: h.by_purpose(by_phase[s.phase]["counters"].get(s.name, {}))
                for s in watchers}  # fmt: skip
    values: dict[str, Any] = {}
    for side in watchers:
        counts, n = purposes[side.name], max(1, len(side.ids))
        print_breakdown(side, counts, sim_total - naive_requests if len(watchers) == 1 else None)
        counted = sum(counts.values())
        values[f"{side.name}_requests_per_payment_counted"] = counted / n
        values |= {f"{side.name}_purpose_{p}_per_payment": v / n for p, v in counts.items()}
        values[f"{side.name}_per_payment"] = (counted or costs[side.name]["total"]) / n
    if len(watchers) > 1:
        total = sum(sum(c.values()) for c in purposes.values())
        print(
            f"  cross-check: the watchers' counters add up to {total}; the simulator counted "
            f"{sim_total - naive_requests} (all /v1 requests minus the naive side's own)\n"
        )
    values["naive_per_payment"] = mine_naive = naive_requests / max(1, len(naive.ids))
    for side in watchers:
        mine = values[f"{side.name}_per_payment"]
        values[f"ratio_{side.name}_naive"] = ratio = mine / mine_naive if naive_requests else None
        print(
            f"Voltage requests per payment: {side.label} {mine:.2f} vs naive {mine_naive:.2f} "
            f"(its {naive_requests} requests: creates {naive.client.request_count}, loop GETs "
            f"{naive.loop.gets}); ratio {side.label}/naive = {fmt(ratio, 3)} (target <= 0.1)"
        )
    print()
    for side in watchers if a.mix else ():
        print(f"[{side.label}]")
        creates = naive.client.request_count / max(1, len(naive.ids))
        values[f"{side.name}_requests_per_payment_3600"], naive_3600, never = extrapolate(
            a, purposes[side.name], len(side.ids), creates
        )
        values |= {"naive_requests_per_payment_3600": naive_3600,
                   "naive_requests_never_paid_3600": never}  # fmt: skip
    return values


def print_diagnostics(sides: list[Side], costs: dict[str, Any], phases: list[Phase]) -> None:
    """Counters, request sources, the naive loop's promise, and every problem by id."""
    print("Diagnostics")
    by_phase = {p["label"]: p for p in phases}
    for s in sides:
        if isinstance(s, WatcherSide):
            counters = by_phase[s.phase]["counters"].get(s.name, {})
            print(
                f"  {s.label} counters: "
                + ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))
            )
            gets, create_gets = costs[s.name]["gets"], s.create_requests - s.create_posts
            invalid = ", ".join(f"{k}: {v}" for k, v in s.invalid.items()) or "none"
            print(
                f"  {s.label}: GETs of its ids={gets} (create-time {create_gets}, later "
                f"{gets - create_gets}); list calls={costs[s.name]['list_calls']:.0f}; creates: "
                f"{s.create_posts} POSTs, {s.create_requests} requests\n  {s.label} subscriber: "
                f"{s.posts} POSTs, {len(s.reported)} payments reported, {s.redeliveries} "
                f"redeliveries (same webhook-id), failed verification: {invalid}"
            )
        if isinstance(s, HintSide):
            answers = ", ".join(f"{k}={v}" for k, v in sorted(s.answers.items()))
            print(
                f"  {s.label}: webhooks posted={sum(s.answers.values())} ({answers}); POST round "
                f"trip p50 {fmt(percentile(s.post_ms, 50), 1)} ms, max "
                f"{fmt(max(s.post_ms) if s.post_ms else None, 1)} ms"
            )
        if isinstance(s, NaiveSide):
            loop = s.loop
            promise = "kept its promise" if loop.kept_promise() else (
                f"could NOT keep its {loop.interval:g} s promise")  # fmt: skip
            print(
                f"  naive: {promise}: mean interval between two GETs of a payment "
                f"{fmt(loop.mean_gap, 2)} s with {loop.threads} threads; loop GETs={loop.gets} "
                f"(errors {loop.get_errors}), rounds={loop.rounds}, overruns={loop.overruns}, "
                f"longest round={loop.longest_round:.2f}s; creates: {s.create_posts} POSTs, "
                f"{s.create_requests} requests"
            )
    for p in phases:
        print(
            f"  {p['label']}: creates took {p['create_seconds']:.1f}s "
            f"({p['posts_during_creates']} POSTs; latest create {p['create_lag_max']:.1f}s "
            f"behind its paced instant), latest settle call "
            f"{p['settle_lateness_max'] * 1000:.0f} ms behind plan"
        )
    for what in ("by_route", "by_status"):
        print(
            f"  simulator {what}: {json.dumps(phases[-1]['stats'].get(what, {}), sort_keys=True)}"
        )
    worst = sorted(((s.reported[p] - s.acted_at[p]) * 1000, s.label, p)
                   for s in sides for p in s.acted_at if p in s.reported)[-5:]  # fmt: skip
    print("  slowest reports: " + "; ".join(f"{s} {p[:8]} {ms:,.0f} ms" for ms, s, p in worst))
    for s in sides:
        print_problems(s)


def print_problems(s: Side) -> None:
    if s.act_failed:
        print(f"  {s.label}: {len(s.act_failed)} settle/fail calls failed (not checked)")
    for pid in s.undetected():
        print(f"  MISSED: {s.label} {pid} ({s.classes.get(pid)})")
    for pid in s.wrong():
        print(f"  WRONG: {s.label} {pid} ({s.classes.get(pid)}) reported "
              f"{s.reported_status.get(pid)}, expected {s.expected.get(pid)}")  # fmt: skip
    for pid in s.unexpected():
        status = s.reported_status.get(pid) or s.detected_status.get(pid)
        print(f"  UNEXPECTED: {s.label} {pid} reported {status}")
    for pid in s.duplicates():
        print(f"  DUPLICATE: {s.label} {pid}: {s.events[pid]} outbox events, "
              f"{s.double_reported.get(pid, 1)} distinct webhook-ids")  # fmt: skip


def report(a: Any, stack: h.Stack, settings: Any, sides: list[Side], phases: list[Phase],
           started: float) -> dict[str, Any]:  # fmt: skip
    """Print everything; return the headline numbers for `--json`."""
    by_phase = {p["label"]: p for p in phases}
    lists = list_shares(sides, by_phase)
    costs = {s.name: cost_of(s, by_phase[s.phase]["stats"], lists[s.name]) for s in sides}
    h.header("detection benchmark", stack)
    print_header(a, settings, sides)
    columns = [side_rows(s, costs[s.name], a.mix) for s in sides]
    rows = [[label, *(c[i][1] for c in columns)] for i, (label, _) in enumerate(columns[0])]
    h.print_table("Results", ["", *(s.label for s in sides)], rows)
    rows = []
    for s in sides:
        ages = {p: s.acted_at[p] - s.created_at[p] for p in s.acted_at}
        for name, young in (("age < 60s", True), ("age >= 60s", False)):
            lat = latencies_ms(s, [p for p, age in ages.items() if (age < FIRST_MINUTE) == young])
            rows.append([f"{s.label}, {name} at settle", str(len(lat)), fmt(percentile(lat, 50)),
                         fmt(percentile(lat, 99)), fmt(max(lat) if lat else None)])  # fmt: skip
    title = "Latency at the subscriber by payment age at settle"
    h.print_table(title, ["", "count", "p50 ms", "p99 ms", "max ms"], rows)
    mix_costs = {}
    if a.mix:
        mix_costs = {s.name: class_costs(s, by_phase[s.phase]["stats"], lists[s.name])
                     for s in sides}  # fmt: skip
        mix_report(a, sides, mix_costs)
    cost_values = cost_section(a, sides, phases, costs)
    print_diagnostics(sides, costs, phases)
    print(f"  total wall time: {time.time() - started:.1f}s")
    return headline(a, sides, costs, mix_costs, lists) | cost_values


def headline(a: Any, sides: list[Side], costs: dict[str, Any], mix_costs: dict[str, Any],
             lists: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """The flat JSON object `--json` writes (read by `bench/run_all`)."""
    values: dict[str, Any] = {
        "bench": "detection", "mode": "mix" if a.mix else "latency", "payments": a.payments,
        "seed": a.seed, "sides": ",".join(s.name for s in sides),
        "problems": sum(s.problems() for s in sides),
        "worker_concurrency": a.worker_concurrency, "create_over_s": a.create_over,
    }  # fmt: skip
    if a.mix:
        values["mix_expiration_s"] = a.expiration
        counts = mix_counts(a.payments, a.mix_shares)
        for name, share, count in zip(MIX_CLASSES, a.mix_shares, counts, strict=True):
            values |= {f"mix_share_{name}": share, f"mix_count_{name}": count}
    else:
        values["settle_window_s"] = a.duration
    for s in sides:
        p, n = s.name, max(1, len(s.ids))
        lat, outbox = latencies_ms(s), latencies_ms(s, at="detected")
        values |= {
            f"{p}_detected": sum(1 for x in s.checked() if s.expected[x] and x in s.reported),
            f"{p}_problems": s.problems(), f"{p}_redeliveries": s.redeliveries,
            f"{p}_requests_per_payment": costs[p]["total"] / n,
            f"{p}_list_calls_per_payment": lists[p] / n,
            f"{p}_latency_ms_max": max(lat) if lat else None,
            f"{p}_detected_ms_max": max(outbox) if outbox else None,
        }  # fmt: skip
        for q in (50, 95, 99):
            values[f"{p}_latency_ms_p{q}"] = percentile(lat, q)
            values[f"{p}_detected_ms_p{q}"] = percentile(outbox, q)
        if a.mix:
            expiry = expiry_ms(s)
            values |= {f"{p}_expiry_ms_p50": percentile(expiry, 50),
                       f"{p}_expiry_ms_p99": percentile(expiry, 99)}  # fmt: skip
            for name in MIX_CLASSES:
                values[f"{p}_latency_ms_p50_{name}"] = percentile(
                    latencies_ms(s, of_class(s, name)), 50
                )
        for name, (_count, requests) in mix_costs.get(p, {}).items():
            values[f"{p}_requests_per_payment_{name}"] = requests
        if isinstance(s, NaiveSide):
            values |= {"naive_mean_interval_s": s.loop.mean_gap,
                       "naive_kept_promise": s.loop.kept_promise()}  # fmt: skip
    return values
