"""The detection bench's report: latencies, Voltage requests, the 3,600 s arithmetic, the JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bench import detection_sides as d
from bench import harness as h
from bench import report as rep
from bench.detection_sides import class_costs, cost_of, list_shares, mean_pending, watchers
from bench.report import fmt, percentile, percentiles, top
from watcher.api.ingress import INGRESS_ROUTE

PER_PAYMENT = frozenset({"create", "read_back", "adopt", "confirm", "expiry_check", "hint"})
TIME_BASED = frozenset({"sweep", "reconcile", "fallback_poll", "poll"})
DEFAULT_EXPIRY = 3600.0  # what Voltage gives an invoice when the create names none
SHOWN_SETTINGS = [f"watcher_{name}" for name in (
    "sweep_interval", "sweep_overlap", "sweep_max_pages", "reconcile_interval",
    "reconcile_page_interval", "poll_sparse_interval", "fallback_after", "dispatch_interval",
    "generating_poll_interval", "expiry_grace", "webhook_max_in_flight")]  # fmt: skip
LABELS = {name: label for name, (label, _, _) in d.CLASSES.items()}
Side = Any  # a side of bench.detection_sides; which one is told by its name


def latencies_ms(
    side: Side, only: Iterable[str] | None = None, at: str = "reported"
) -> list[float]:
    """Settle/fail answer (or, for `only` left to expire, expiry) -> reported (or detected)."""
    seen = side.reported if at == "reported" else side.detected
    start = {**(side.expires_at if only is not None else {}), **side.acted_at}
    ids = side.acted_at.keys() if only is None else only
    return [float(seen[p] - start[p]) * 1000 for p in ids if p in seen and p in start]


def expiry_ms(side: Side) -> list[float]:
    """Invoice expiry instant -> reported, for the payments left to expire."""
    pids = [p for p in side.checked() if side.want(p) == "expired" and p not in side.acted_at]
    return latencies_ms(side, pids)


def of_class(side: Side, name: str) -> list[str]:
    return [pid for pid in side.checked() if side.classes.get(pid) == name]


def trio(values: list[float]) -> str:
    return f"{fmt(percentile(values, 50))} / {fmt(percentile(values, 99))} / {fmt(top(values))}"


def print_header(a: Any, settings: Any, sides: list[Side]) -> None:
    """The run's parameters and settings (what they mean: bench/README.md)."""
    labels = [s.label for s in sides]
    creates = f"creates paced over {a.create_over:g}s" if a.create_over else "creates as fast as"
    creates += f" on {a.create_threads} threads" if a.create_over else f" {a.create_threads} go"
    print("mode: " + (f"concurrent: {', '.join(labels[:-1])} and {labels[-1]} in the same time "
          "window" if a.mode == "concurrent" else "sequential: watcher phase, then Celery "
          "stopped, then naive phase (same simulator)"))  # fmt: skip
    if a.mix:
        counts = d.mix_counts(a.payments, a.mix_shares)
        named = zip(d.MIX_CLASSES, a.mix_shares, counts, strict=True)
        shares = ", ".join(f"{LABELS[n]} {s:.0%} ({c})" for n, s, c in named)
        late_to, (early_from, early_to) = a.expiration - d.BEFORE_EXPIRY, d.EARLY_OFFSETS
        print(f"parameters: realistic mix, payments={a.payments} per side, {creates}, invoice "
              f"expiration={a.expiration}s, shares: {shares}; offsets from each creation: paid "
              f"within 60 s {early_from:g}-{early_to:g}s, paid later {d.LATE_FROM:g}-"
              f"{late_to:g}s, failed 1-{late_to:g}s; drain timeout={a.drain_timeout:.0f}s after "
              f"the last expiry, seed={a.seed}")  # fmt: skip
    else:
        print(f"parameters: payments={a.payments} per side, {creates}, settle_share="
              f"{a.settle_share}, fail_share={a.fail_share}, settle window={a.duration:.0f}s "
              f"(same offsets for every side), drain timeout={a.drain_timeout:.0f}s, "
              f"seed={a.seed}")  # fmt: skip
    overridden = {"watcher_sweep_interval": a.sweep_interval,
                  "watcher_dispatch_interval": a.dispatch_interval}  # fmt: skip
    parts = [f"{n.upper()}={getattr(settings, n)}{'' if overridden.get(n) else '*'}"
             for n in SHOWN_SETTINGS if hasattr(settings, n)]  # fmt: skip
    parts += [f"WATCHER_POLL_SCHEDULE={a.poll_schedule}"] if a.poll_schedule else []
    n = a.worker_concurrency
    layout = f"--concurrency {n}" if n else "concurrency = CPU count"
    print("watcher: " + ", ".join(parts) + " (* = production default); the Procfile's worker "
          f"(prefork, {layout}) and beat")  # fmt: skip
    if a.hint:
        print(f"watcher+hint: a second deployment (Redis db 1, wallet {d.WALLETS['hint']}) and "
              f"`watcher api`, told by signed Voltage webhooks to /v1{INGRESS_ROUTE}")  # fmt: skip
    print(f"naive: GET every pending payment every {a.naive_interval:g}s ({a.naive_threads} "
          f"threads), wallet {d.WALLETS['naive']}\nlatency = settle/fail answer -> the first "
          "verified webhook at the subscriber; 'detected' = the outbox write (XADD); naive: "
          "its first final GET is both\n")  # fmt: skip


def side_rows(side: Side, cost: dict[str, float], mix: bool) -> list[tuple[str, str]]:
    lat, n = latencies_ms(side), max(1, len(side.ids))
    acted = [d.CLASSES[side.classes[p]][2] for p in side.acted_at if p in side.classes]
    errors = f" ({side.create_errors} failed)" if side.create_errors else ""
    reported = sum(1 for p in side.checked() if side.want(p) and p in side.reported)
    expiring = sum(1 for p in side.checked() if side.want(p) == "expired")
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
            ("latency max (ms)", fmt(top(lat))),
            ("latency mean (ms)", fmt(sum(lat) / len(lat) if lat else None)),
            ("detected p50/p99/max (ms)", trio(latencies_ms(side, at="detected"))),
            *([("expiry -> webhook p50/p99/max", trio(expiry_ms(side)))] if mix else []),
            ("Voltage requests (simulator)", str(cost["total"])),
            ("  requests / payment", fmt(cost["total"] / n, 2)),
            ("  creates / payment (POST+invoice GETs)", fmt(side.create_requests / n, 2)),
            ("  watching / payment (GETs + lists)", fmt(cost["watching"] / n, 2)),
            ("  of which list calls (GET /payments)", fmt(cost["list_calls"])),
            ("pending payment-minutes", fmt(cost["minutes"], 1)),
            ("run duration (s)", fmt(side.ended - side.started, 1))]  # fmt: skip


def mix_report(a: Any, sides: list[Side], costs: dict[str, dict[str, Any]]) -> None:
    others, rows = sides[:-1], []
    for name in (*d.MIX_CLASSES, "all"):
        theirs, mine = costs["naive"][name][1], [costs[s.name][name][1] for s in sides]
        rows.append([LABELS.get(name, name), str(costs[sides[0].name][name][0]),
                     *(fmt(x, 1) for x in mine),
                     *(f"{x / theirs:.2f}" if theirs else "-" for x in mine[:-1])])  # fmt: skip
    rep.print_table(
        f"Realistic mix: Voltage requests per payment by class (expiration {a.expiration}s; "
        "simulator counts: each payment's own GETs, plus creates and list calls shared out "
        "evenly)", ["class", "payments", *(f"{s.label} req/payment" for s in sides),
                    *(f"{s.label}/naive" for s in others)], rows,
    )  # fmt: skip
    rep.print_table(
        "Realistic mix: latency at the subscriber by class, p50 / p99 / max ms (from the "
        "settle/fail answer; for expired ones from the invoice's expiry instant)",
        ["class", *(s.label for s in sides)],
        [[LABELS[n], *(trio(latencies_ms(s, of_class(s, n))) for s in sides)]
         for n in d.MIX_CLASSES],
    )  # fmt: skip
    rows = []
    for name in d.MIX_CLASSES:
        want = d.CLASSES[name][1]
        rows.append([f"{LABELS[name]} -> {want}", *(
            f"{sum(1 for p in of_class(s, name) if s.reported_status.get(p) == want)}/"
            f"{len(of_class(s, name))}" for s in sides)])  # fmt: skip
    title = "Realistic mix: payments that reached the right final status"
    rep.print_table(title, ["class -> status", *(s.label for s in sides)], rows)


def print_breakdown(side: Side, counts: Mapping[str, int], sim_count: int | None) -> None:
    """Per purpose: requests and requests per payment; then the sum against the simulator's."""
    n, total = max(1, len(side.ids)), sum(counts.values())
    kind = {**dict.fromkeys(PER_PAYMENT, "per payment"), **dict.fromkeys(TIME_BASED, "time-based")}
    rows = [[p, kind.get(p, "unclassified"), str(v), fmt(v / n, 2)] for p, v in counts.items()]
    rows.append(["sum", "", str(total), fmt(total / n, 2)])
    title = f"Voltage requests by purpose, {side.label} (its Redis counters)"
    rep.print_table(title, ["purpose", "kind", "requests", "per payment"], rows)
    if sim_count is not None:
        print(f"  cross-check: the counters add up to {total}; the simulator counted {sim_count} "
              f"(all /v1 requests minus the naive side's own); difference {sim_count - total:+d}"
              + ("" if total else " (the watcher does not count by purpose yet)"))  # fmt: skip
    print()


def extrapolate(a: Any, counts: Mapping[str, int], n: int, creates: float) -> Any:
    """Per-payment cost at 3,600 s invoices, by arithmetic, with the formula shown."""
    fixed = sum(v for p, v in counts.items() if p not in TIME_BASED) / max(1, n)
    timed = sum(v for p, v in counts.items() if p in TIME_BASED) / max(1, n)
    measured, default = mean_pending(a.mix_shares, a.expiration), mean_pending(a.mix_shares, 3600)
    scale = default / measured if measured else 0.0
    watcher = fixed + timed * scale if any(counts.values()) else None
    interval, (e, late, x, f) = a.naive_interval, a.mix_shares
    naive, never_paid = creates + default / interval, creates + DEFAULT_EXPIRY / interval
    print("Extrapolated to Voltage's default 3600 s invoices (arithmetic)\n"
          f"  T(E) = mean seconds pending under this mix = {e:g}*{sum(d.EARLY_OFFSETS) / 2:g} + "
          f"{late:g}*({d.LATE_FROM:g}+E-{d.BEFORE_EXPIRY:g})/2 + {x:g}*E + "
          f"{f:g}*(1+E-{d.BEFORE_EXPIRY:g})/2\n  T({a.expiration:.0f}) = {measured:,.1f} s "
          f"(measured run); T(3600) = {default:,.1f} s")  # fmt: skip
    print(f"  watcher(3600) = per-payment purposes + time-based purposes * T(3600)/T(E) = "
          f"{fixed:.2f} + {timed:.2f} * {scale:.2f} = {watcher:.2f} requests per payment (per "
          f"payment: {', '.join(sorted(PER_PAYMENT))} and unclassified; time-based: "
          f"{', '.join(sorted(TIME_BASED))}; an upper bound for the sweeps, which cost the same "
          "however many payments are pending)" if watcher is not None else "  watcher(3600): "
          "not available, the watcher does not count requests by purpose yet")  # fmt: skip
    ratio = watcher / naive if watcher is not None and naive else None
    print(f"  naive(3600) = create requests + T(3600)/{interval:g} s = {creates:.2f} + "
          f"{default / interval:,.1f} = {naive:,.1f} requests per payment; a never-paid 3600 s "
          f"invoice costs it {creates:.2f} + {DEFAULT_EXPIRY / interval:,.0f} = "
          f"{never_paid:,.0f}\n  ratio watcher/naive at 3600 s: {fmt(ratio, 3)} "
          "(target <= 0.1)\n")  # fmt: skip
    return watcher, naive, never_paid


def cost_section(a: Any, sides: list[Side], phases: list[dict[str, Any]], costs: Any) -> Any:
    """Requests per payment by purpose, the ratio to naive, the 3,600 s arithmetic (mix)."""
    naive, mine = sides[-1], watchers(sides)
    sim_total = int(phases[-1]["stats"].get("requests", 0))  # cumulative over the phases
    by_phase, made = {p["label"]: p for p in phases}, naive.requests_made
    purposes = {s.name: rep.by_purpose(by_phase[s.phase]["counters"].get(s.name, {})) for s in mine}
    values: dict[str, Any] = {}
    for side in mine:
        counts, n = purposes[side.name], max(1, len(side.ids))
        print_breakdown(side, counts, sim_total - made if len(mine) == 1 else None)
        values[f"{side.name}_requests_per_payment_counted"] = counted = sum(counts.values()) / n
        values |= {f"{side.name}_purpose_{p}_per_payment": v / n for p, v in counts.items()}
        values[f"{side.name}_per_payment"] = counted or costs[side.name]["total"] / n
    if len(mine) > 1:
        total = sum(sum(c.values()) for c in purposes.values())
        print(f"  cross-check: the watchers' counters add up to {total}; the simulator counted "
              f"{sim_total - made} (all /v1 requests minus the naive side's own)\n")  # fmt: skip
    values["naive_per_payment"] = theirs = made / max(1, len(naive.ids))
    for side in mine:
        ours = values[f"{side.name}_per_payment"]
        values[f"ratio_{side.name}_naive"] = ratio = ours / theirs if made else None
        print(f"Voltage requests per payment: {side.label} {ours:.2f} vs naive {theirs:.2f} "
              f"(its {made} requests: creates {naive.client.request_count}, loop GETs "
              f"{naive.loop.gets}); ratio {side.label}/naive = {fmt(ratio, 3)} "
              "(target <= 0.1)")  # fmt: skip
    print()
    for side in mine if a.mix else ():
        print(f"[{side.label}]")
        creates = naive.client.request_count / max(1, len(naive.ids))
        got = extrapolate(a, purposes[side.name], len(side.ids), creates)
        values[f"{side.name}_requests_per_payment_3600"] = got[0]
        values |= {"naive_requests_per_payment_3600": got[1],
                   "naive_requests_never_paid_3600": got[2]}  # fmt: skip
    return values


def print_diagnostics(sides: list[Side], costs: dict[str, Any], phases: list[Any]) -> None:
    """Counters, request sources, the naive loop's promise, and every problem by id."""
    print("Diagnostics")
    by_phase = {p["label"]: p for p in phases}
    for s in watchers(sides):
        counters = by_phase[s.phase]["counters"].get(s.name, {})
        print(
            f"  {s.label} counters: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))
        )
        gets, create_gets = costs[s.name]["gets"], s.create_requests - s.create_posts
        invalid = ", ".join(f"{k}: {v}" for k, v in s.invalid.items()) or "none"
        print(f"  {s.label}: GETs of its ids={gets} (create-time {create_gets}, later "
              f"{gets - create_gets}); list calls={costs[s.name]['list_calls']:.0f}; creates: "
              f"{s.create_posts} POSTs, {s.create_requests} requests\n  {s.label} subscriber: "
              f"{s.posts} POSTs, {len(s.reported)} payments reported, {s.redeliveries} "
              f"redeliveries (same webhook-id), failed verification: {invalid}")  # fmt: skip
        if s.name == "hint":
            answers = ", ".join(f"{k}={v}" for k, v in sorted(s.answers.items()))
            print(f"  {s.label}: webhooks posted={sum(s.answers.values())} ({answers}); POST "
                  f"round trip p50 {fmt(percentile(s.post_ms, 50), 1)} ms, max "
                  f"{fmt(top(s.post_ms), 1)} ms")  # fmt: skip
    s, loop = sides[-1], sides[-1].loop
    promise = "kept its promise" if loop.kept_promise() else (
        f"could NOT keep its {loop.interval:g} s promise")  # fmt: skip
    print(f"  naive: {promise}: mean interval between two GETs of a payment "
          f"{fmt(loop.mean_gap, 2)} s with {loop.threads} threads; loop GETs={loop.gets} "
          f"(errors {loop.get_errors}), rounds={loop.rounds}, overruns={loop.overruns}, "
          f"longest round={loop.longest_round:.2f}s; creates: {s.create_posts} POSTs, "
          f"{s.create_requests} requests")  # fmt: skip
    for p in phases:
        print(f"  {p['label']}: creates took {p['create_seconds']:.1f}s "
              f"({p['posts_during_creates']} POSTs; latest create {p['create_lag_max']:.1f}s "
              f"behind its paced instant), latest settle call "
              f"{p['settle_lateness_max'] * 1000:.0f} ms behind plan")  # fmt: skip
    for what in ("by_route", "by_status"):
        print(f"  simulator {what}:", json.dumps(phases[-1]["stats"].get(what, {}), sort_keys=True))
    worst = sorted(((s.reported[p] - s.acted_at[p]) * 1000, s.label, p)
                   for s in sides for p in s.acted_at if p in s.reported)[-5:]  # fmt: skip
    print("  slowest reports: " + "; ".join(f"{s} {p[:8]} {ms:,.0f} ms" for ms, s, p in worst))
    for s in sides:
        print_problems(s)


def print_problems(s: Side) -> None:
    if s.act_failed:
        print(f"  {s.label}: {len(s.act_failed)} settle/fail calls failed (not checked)")
    for kind, pids in (("MISSED", s.undetected()), ("WRONG", s.wrong()),
                       ("UNEXPECTED", s.unexpected()), ("DUPLICATE", s.duplicates())):  # fmt: skip
        for pid in pids:
            status = s.reported_status.get(pid)
            print(f"  {kind}: {s.label} {pid}" + {
                "MISSED": f" ({s.classes.get(pid)})",
                "WRONG": f" ({s.classes.get(pid)}) reported {status}, expected {s.want(pid)}",
                "UNEXPECTED": f" reported {status or s.detected_status.get(pid)}",
                "DUPLICATE": f": {s.events[pid]} outbox events, "
                f"{s.double_reported.get(pid, 1)} distinct webhook-ids"}[kind])  # fmt: skip


def report(a: Any, stack: h.Stack, settings: Any, sides: list[Side], phases: list[Any],
           started: float) -> dict[str, Any]:  # fmt: skip
    """Print everything; return the headline numbers for `--json`."""
    by_phase = {p["label"]: p for p in phases}
    lists = list_shares(sides, by_phase)
    costs = {s.name: cost_of(s, by_phase[s.phase]["stats"], lists[s.name]) for s in sides}
    rep.header("detection benchmark", stack)
    print_header(a, settings, sides)
    columns = [side_rows(s, costs[s.name], a.mix) for s in sides]
    rows = [[label, *(c[i][1] for c in columns)] for i, (label, _) in enumerate(columns[0])]
    rep.print_table("Results", ["", *(s.label for s in sides)], rows)
    rows = []
    for s in sides:
        ages = {p: s.acted_at[p] - s.created_at[p] for p in s.acted_at}
        for name, young in (("age < 60s", True), ("age >= 60s", False)):
            lat = latencies_ms(s, [p for p, age in ages.items() if (age < d.FIRST_MINUTE) == young])
            rows.append([f"{s.label}, {name} at settle", str(len(lat)), fmt(percentile(lat, 50)),
                         fmt(percentile(lat, 99)), fmt(top(lat))])  # fmt: skip
    title = "Latency at the subscriber by payment age at settle"
    rep.print_table(title, ["", "count", "p50 ms", "p99 ms", "max ms"], rows)
    mix_costs = {}
    if a.mix:
        mix_costs = {s.name: class_costs(s, by_phase[s.phase]["stats"], lists[s.name])
                     for s in sides}  # fmt: skip
        mix_report(a, sides, mix_costs)
    cost_values: dict[str, Any] = cost_section(a, sides, phases, costs)
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
        counts = d.mix_counts(a.payments, a.mix_shares)
        for name, share, count in zip(d.MIX_CLASSES, a.mix_shares, counts, strict=True):
            values |= {f"mix_share_{name}": share, f"mix_count_{name}": count}
    else:
        values["settle_window_s"] = a.duration
    for s in sides:
        p, n = s.name, max(1, len(s.ids))
        lat, outbox = latencies_ms(s), latencies_ms(s, at="detected")
        values |= {
            f"{p}_detected": sum(1 for x in s.checked() if s.want(x) and x in s.reported),
            f"{p}_problems": s.problems(), f"{p}_redeliveries": s.redeliveries,
            f"{p}_requests_per_payment": costs[p]["total"] / n,
            f"{p}_list_calls_per_payment": lists[p] / n,
            f"{p}_latency_ms_max": top(lat), f"{p}_detected_ms_max": top(outbox),
            **percentiles(f"{p}_latency_ms", lat, 50, 95, 99),
            **percentiles(f"{p}_detected_ms", outbox, 50, 95, 99),
        }  # fmt: skip
        if a.mix:
            values |= percentiles(f"{p}_expiry_ms", expiry_ms(s), 50, 99)
            for name in d.MIX_CLASSES:
                lat = latencies_ms(s, of_class(s, name))
                values[f"{p}_latency_ms_p50_{name}"] = percentile(lat, 50)
        for name, (_count, requests) in mix_costs.get(p, {}).items():
            values[f"{p}_requests_per_payment_{name}"] = requests
        if p == "naive":
            values |= {"naive_mean_interval_s": s.loop.mean_gap,
                       "naive_kept_promise": s.loop.kept_promise()}  # fmt: skip
    return values
