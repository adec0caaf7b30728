"""The detection bench's report: the tables on stdout and the flat JSON for `--json`."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.common import fmt, machine_line, percentile, print_table
from bench.detection_numbers import (
    ClassCost,
    Cost,
    age_split,
    class_costs,
    cost_of,
    expiry_latencies_ms,
    latencies_ms,
    list_shares,
)
from bench.detection_plan import (
    BEFORE_EXPIRY,
    CLASS_EXPECTED,
    CLASS_LABELS,
    EARLY_OFFSETS,
    FIRST_MINUTE,
    LATE_FROM,
    MIX_CLASSES,
    Params,
    PhaseInfo,
    mix_counts,
)
from bench.detection_sides import HintSide, NaiveSide, Side, WatcherSide
from bench.detection_stack import HINT_WALLET, NAIVE_WALLET, Stack
from bench.voltage_cost import (
    Extrapolation,
    MixShape,
    by_purpose,
    counted,
    print_breakdown,
    print_extrapolation,
)
from watcher.api.ingress import INGRESS_ROUTE

# Settings worth printing when the deployment has them (names come and go as detection changes).
SHOWN_SETTINGS = (
    "watcher_sweep_interval",
    "watcher_sweep_overlap",
    "watcher_sweep_max_pages",
    "watcher_reconcile_interval",
    "watcher_reconcile_page_interval",
    "watcher_poll_sparse_interval",
    "watcher_fallback_after",
    "watcher_dispatch_interval",
    "watcher_generating_poll_interval",
    "watcher_expiry_grace",
    "watcher_webhook_max_in_flight",
)


def p50_p99_max(values: list[float]) -> str:
    top = max(values) if values else None
    return f"{fmt(percentile(values, 50))} / {fmt(percentile(values, 99))} / {fmt(top)}"


def and_list(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def settings_line(stack: Stack, params: Params) -> str:
    settings = stack.settings
    assert settings is not None
    overridden = {
        "watcher_sweep_interval": params.sweep_interval,
        "watcher_dispatch_interval": params.dispatch_interval,
    }
    parts = []
    for name in SHOWN_SETTINGS:
        if hasattr(settings, name):
            mark = "" if overridden.get(name) else "*"
            parts.append(f"{name.upper()}={getattr(settings, name)}{mark}")
    if params.poll_schedule:
        parts.append(f"WATCHER_POLL_SCHEDULE={params.poll_schedule}")
    concurrency = params.worker_concurrency
    layout = f"--concurrency {concurrency}" if concurrency else "concurrency = CPU count"
    return (
        "watcher: " + ", ".join(parts) + " (* = production default); worker: the Procfile's "
        f"`celery -A watcher worker --loglevel INFO` (prefork, {layout}) + `celery -A watcher "
        "beat`; one subscription per deployment to the bench's receiver on loopback"
    )


def print_header(params: Params, stack: Stack, sides: list[Side], load_before: str) -> None:
    """What ran, on what, with which settings."""
    print()
    print("=== voltage-watcher detection benchmark ===")
    redis_version = stack.rt.redis.info("server").get("redis_version", "?")
    print(machine_line(redis_version, load_before))
    mode = (
        f"concurrent: {and_list([s.label for s in sides])} created, settled and watched in the "
        "same time window"
        if params.mode == "concurrent"
        else "sequential: watcher phase, then Celery stopped, then naive phase (same simulator)"
    )
    print(f"mode: {mode}")
    creates = (
        f"creates paced over {params.create_over:g}s on {params.create_threads} threads"
        if params.create_over
        else f"creates as fast as {params.create_threads} threads go"
    )
    if params.mix:
        counts = mix_counts(params.payments, params.mix_shares)
        shares = ", ".join(
            f"{CLASS_LABELS[name]} {share:.0%} ({count})"
            for name, share, count in zip(MIX_CLASSES, params.mix_shares, counts, strict=True)
        )
        late_to = (params.expiration or 0) - BEFORE_EXPIRY
        print(
            f"parameters: realistic mix, payments={params.payments} per side, {creates}, "
            f"invoice expiration={params.expiration}s (the simulator expires them by itself), "
            f"shares: {shares}; offsets from each payment's creation: paid within 60 s uniform "
            f"{EARLY_OFFSETS[0]:g}-{EARLY_OFFSETS[1]:g}s, paid later {LATE_FROM:g}-{late_to:g}s, "
            f"failed 1-{late_to:g}s; drain timeout={params.drain_timeout:.0f}s after the last "
            f"expiry, seed={params.seed}"
        )
    else:
        print(
            f"parameters: payments={params.payments} per side, {creates}, "
            f"settle_share={params.settle_share}, fail_share={params.fail_share}, settle "
            f"window={params.duration:.0f}s (uniform, same offsets for every side), drain "
            f"timeout={params.drain_timeout:.0f}s, seed={params.seed}"
        )
    print(settings_line(stack, params))
    if params.hint:
        print(
            f"watcher+hint: the same settings in a second deployment (Redis db 1, its own "
            f"worker and beat, wallet {HINT_WALLET}) plus `watcher api` with "
            "VOLTAGE_WEBHOOK_SECRET; right after each settle/fail answers, the bench POSTs "
            "Voltage's signed webhook {type: receive, detail: {event, data: payment}} to "
            f"/v1{INGRESS_ROUTE}"
        )
    print(
        f"naive: GET every pending payment every {params.naive_interval:g}s "
        f"({params.naive_threads} threads, plain requests.Session), wallet {NAIVE_WALLET}"
    )
    print(
        "latency = the first verified webhook at the subscriber (Standard Webhooks signature "
        "checked with the `standardwebhooks` package) - the settle/fail call's answer; "
        "'detected' = the watcher's outbox write (XADD ms); naive: its first final GET is both"
    )
    print()


def side_rows(side: Side, cost: Cost, mix: bool) -> list[tuple[str, str]]:
    lat = latencies_ms(side)
    outbox = latencies_ms(side, at="detected")
    settled = sum(1 for pid, a in side.actions.items() if a == "settle" and pid in side.acted_at)
    failed = sum(1 for pid, a in side.actions.items() if a == "fail" and pid in side.acted_at)
    expiring = sum(1 for pid in side.checked() if side.expected[pid] == "expired")
    n = max(1, len(side.ids))
    errors = f" ({side.create_errors} failed)" if side.create_errors else ""
    rows = [
        ("payments created", f"{len(side.ids)}{errors}"),
        ("settled (completed)", str(settled)),
        ("failed on purpose", str(failed)),
    ]
    if mix:
        rows.append(("left to expire", str(expiring)))
    rows += [
        (
            "reported",
            str(sum(1 for p in side.checked() if side.expected[p] and p in side.reported)),
        ),
        ("missed", str(len(side.undetected()))),
        ("wrong final status", str(len(side.wrong()))),
        ("events for untouched payments", str(len(side.unexpected()))),
        ("reported twice (distinct ids)", str(len(side.duplicates()))),
        ("redeliveries (same webhook-id)", str(side.redeliveries) if side.name != "naive" else "-"),
        ("latency p50 (ms)", fmt(percentile(lat, 50))),
        ("latency p99 (ms)", fmt(percentile(lat, 99))),
        ("latency max (ms)", fmt(max(lat) if lat else None)),
        ("latency mean (ms)", fmt(sum(lat) / len(lat) if lat else None)),
        ("detected p50/p99/max (ms)", p50_p99_max(outbox)),
    ]
    if mix:
        rows.append(("expiry -> webhook p50/p99/max", p50_p99_max(expiry_latencies_ms(side))))
    rows += [
        ("Voltage requests (simulator)", str(cost.total)),
        ("  requests / payment", fmt(cost.total / n, 2)),
        ("  creates / payment (POST+invoice GETs)", fmt(cost.creates / n, 2)),
        ("  watching / payment (GETs + lists)", fmt(cost.watching / n, 2)),
        ("  of which list calls (GET /payments)", fmt(cost.list_calls)),
        ("pending payment-minutes", fmt(cost.pending_minutes, 1)),
        ("run duration (s)", fmt(side.ended - side.started, 1)),
    ]
    return rows


def mix_report(
    params: Params,
    sides: list[Side],
    costs: dict[str, dict[str, ClassCost]],
    list_calls: dict[str, float],
) -> None:
    naive = next((s for s in sides if s.name == "naive"), None)
    others = [s for s in sides if s is not naive]
    rows = []
    for name in (*MIX_CLASSES, "all"):
        row = [CLASS_LABELS.get(name, name), str(costs[sides[0].name][name].count)]
        row += [fmt(costs[s.name][name].requests, 1) for s in sides]
        if naive is not None:
            theirs = costs[naive.name][name].requests
            for side in others:
                mine = costs[side.name][name].requests
                row.append(f"{mine / theirs:.2f}" if theirs else "-")
        rows.append(row)
    print_table(
        f"Realistic mix: Voltage requests per payment by class (expiration {params.expiration}s; "
        "simulator counts: each payment's own GETs, plus creates and list calls shared out "
        "evenly)",
        [
            "class",
            "payments",
            *(f"{s.label} req/payment" for s in sides),
            *(f"{s.label}/naive" for s in others if naive),
        ],
        rows,
    )
    rows = []
    for name in MIX_CLASSES:
        row = [CLASS_LABELS[name]]
        for side in sides:
            pids = [pid for pid in side.checked() if side.classes.get(pid) == name]
            row.append(p50_p99_max(latencies_ms(side, pids)))
        rows.append(row)
    print_table(
        "Realistic mix: latency at the subscriber by class, p50 / p99 / max ms (from the "
        "settle/fail answer; for expired ones from the invoice's expiry instant)",
        ["class", *(s.label for s in sides)],
        rows,
    )
    rows = []
    for name in MIX_CLASSES:
        row = [f"{CLASS_LABELS[name]} -> {CLASS_EXPECTED[name]}"]
        for side in sides:
            pids = [pid for pid in side.checked() if side.classes.get(pid) == name]
            right = sum(1 for p in pids if side.reported_status.get(p) == CLASS_EXPECTED[name])
            row.append(f"{right}/{len(pids)}")
        rows.append(row)
    print_table(
        "Realistic mix: payments that reached the right final status",
        ["class -> status", *(s.label for s in sides)],
        rows,
    )


def mix_shape(params: Params) -> MixShape:
    return MixShape(params.mix_shares, EARLY_OFFSETS, LATE_FROM, BEFORE_EXPIRY)


def cost_section(
    params: Params, sides: list[Side], phases: list[PhaseInfo], costs: dict[str, Cost]
) -> dict[str, Any]:
    """Requests per payment (counters by purpose, checked against the simulator), the ratio to
    the naive loop, and the 3,600 s arithmetic (mix only)."""
    naive = next((s for s in sides if isinstance(s, NaiveSide)), None)
    watchers = [s for s in sides if isinstance(s, WatcherSide)]
    sim_total = int(phases[-1].stats.get("requests", 0))  # cumulative over the phases
    naive_requests = naive.requests_made if naive else 0
    by_phase = {phase.label: phase for phase in phases}
    purposes = {s.name: by_purpose(by_phase[s.phase].counters.get(s.name, {})) for s in watchers}
    values: dict[str, Any] = {}
    for side in watchers:
        counts = purposes[side.name]
        print_breakdown(
            f"Voltage requests by purpose, {side.label} (its Redis counters)",
            counts,
            len(side.ids),
            simulator_count=sim_total - naive_requests if len(watchers) == 1 else None,
            simulator_what="all /v1 requests minus the naive side's own",
        )
        n = max(1, len(side.ids))
        per_payment = sum(counts.values()) / n if counted(counts) else costs[side.name].total / n
        values[f"{side.name}_requests_per_payment_counted"] = sum(counts.values()) / n
        for purpose, value in counts.items():
            values[f"{side.name}_purpose_{purpose}_per_payment"] = value / n
        values[f"{side.name}_per_payment"] = per_payment
    if len(watchers) > 1:
        total = sum(sum(counts.values()) for counts in purposes.values())
        print(
            f"  cross-check: the watchers' counters add up to {total}; the simulator counted "
            f"{sim_total - naive_requests} (all /v1 requests minus the naive side's own)\n"
        )
    if naive is not None:
        n = max(1, len(naive.ids))
        values["naive_per_payment"] = naive_requests / n
        for side in watchers:
            mine = values[f"{side.name}_per_payment"]
            ratio = mine / values["naive_per_payment"] if naive_requests else None
            values[f"ratio_{side.name}_naive"] = ratio
            print(
                f"Voltage requests per payment: {side.label} {mine:.2f} vs naive "
                f"{values['naive_per_payment']:.2f} (its {naive_requests} requests: creates "
                f"{naive.client.request_count}, loop GETs {naive.loop.gets}); ratio "
                f"{side.label}/naive = {fmt(ratio, 3)} (target <= 0.1)"
            )
        print()
    if params.mix and naive is not None:
        values.update(extrapolate(params, watchers, naive, purposes))
    return values


def extrapolate(
    params: Params,
    watchers: list[WatcherSide],
    naive: NaiveSide,
    purposes: dict[str, dict[str, int]],
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    naive_creates = naive.client.request_count / max(1, len(naive.ids))
    for side in watchers:
        print(f"[{side.label}]")
        result: Extrapolation = print_extrapolation(
            purposes[side.name],
            len(side.ids),
            shape=mix_shape(params),
            expiry=float(params.expiration or 0),
            naive_create_requests=naive_creates,
            naive_interval=params.naive_interval,
        )
        values[f"{side.name}_requests_per_payment_3600"] = result.watcher
        values["naive_requests_per_payment_3600"] = result.naive
        values["naive_requests_never_paid_3600"] = result.naive_never_paid
    return values


def print_naive(side: NaiveSide) -> None:
    loop = side.loop
    gap = loop.mean_gap
    promise = (
        "kept its promise"
        if loop.kept_promise()
        else f"could NOT keep its {loop.interval:g} s promise"
    )
    print(
        f"  naive: {promise}: mean interval between two GETs of a payment "
        f"{fmt(gap, 2)} s with {loop.threads} threads; loop GETs={loop.gets} (errors "
        f"{loop.get_errors}), rounds={loop.rounds}, overruns={loop.overruns}, longest "
        f"round={loop.longest_round:.2f}s; creates: {side.create_posts} POSTs, "
        f"{side.create_requests} requests"
    )


def print_watcher(side: WatcherSide, cost: Cost, counters: dict[str, int]) -> None:
    create_gets = side.create_requests - side.create_posts
    print(f"  {side.label} counters: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    print(
        f"  {side.label}: GETs of its ids={cost.per_payment_gets} (create-time {create_gets}, "
        f"later {cost.per_payment_gets - create_gets}); list calls={cost.list_calls:.0f}; "
        f"creates: {side.create_posts} POSTs, {side.create_requests} requests"
    )
    invalid = ", ".join(f"{k}: {v}" for k, v in side.invalid.items()) or "none"
    print(
        f"  {side.label} subscriber: {side.posts} POSTs, {len(side.reported)} payments reported, "
        f"{side.redeliveries} redeliveries (same webhook-id), failed verification: {invalid}"
    )
    if isinstance(side, HintSide):
        answers = ", ".join(f"{k}={v}" for k, v in sorted(side.answers.items()))
        print(
            f"  {side.label}: webhooks posted={sum(side.answers.values())} ({answers}); "
            f"POST round trip p50 {fmt(percentile(side.post_ms, 50), 1)} ms, max "
            f"{fmt(max(side.post_ms) if side.post_ms else None, 1)} ms"
        )


def print_problems(side: Side) -> None:
    if side.act_failed:
        print(f"  {side.label}: {len(side.act_failed)} settle/fail calls failed (not checked)")
    for pid in side.undetected():
        print(f"  MISSED: {side.label} {pid} ({side.classes.get(pid)})")
    for pid in side.wrong():
        print(
            f"  WRONG: {side.label} {pid} ({side.classes.get(pid)}) reported "
            f"{side.reported_status.get(pid)}, expected {side.expected.get(pid)}"
        )
    for pid in side.unexpected():
        status = side.reported_status.get(pid) or side.detected_status.get(pid)
        print(f"  UNEXPECTED: {side.label} {pid} reported {status}")
    for pid in side.duplicates():
        print(
            f"  DUPLICATE: {side.label} {pid}: {side.events[pid]} outbox events, "
            f"{side.double_reported.get(pid, 1)} distinct webhook-ids"
        )


def print_diagnostics(sides: list[Side], costs: dict[str, Cost], phases: list[PhaseInfo]) -> None:
    """Counters, request sources, the naive loop's promise, and every problem by id."""
    print("Diagnostics")
    by_phase = {phase.label: phase for phase in phases}
    for side in sides:
        if isinstance(side, WatcherSide):
            print_watcher(side, costs[side.name], by_phase[side.phase].counters.get(side.name, {}))
        elif isinstance(side, NaiveSide):
            print_naive(side)
    for phase in phases:
        print(
            f"  {phase.label}: creates took {phase.create_seconds:.1f}s "
            f"({phase.posts_during_creates} POSTs; latest create {phase.create_lag_max:.1f}s "
            f"behind its paced instant), latest settle call "
            f"{phase.settle_lateness_max * 1000:.0f} ms behind plan"
        )
    final = phases[-1].stats
    print(f"  simulator by_route: {json.dumps(final.get('by_route', {}), sort_keys=True)}")
    print(f"  simulator by_status: {json.dumps(final.get('by_status', {}), sort_keys=True)}")
    worst = sorted(
        ((side.reported[p] - side.acted_at[p]) * 1000, side.label, p)
        for side in sides
        for p in side.acted_at
        if p in side.reported
    )[-5:]
    print("  slowest reports: " + "; ".join(f"{s} {p[:8]} {ms:,.0f} ms" for ms, s, p in worst))
    for side in sides:
        print_problems(side)


def report(
    params: Params,
    stack: Stack,
    sides: list[Side],
    phases: list[PhaseInfo],
    started: float,
    load_before: str,
) -> dict[str, Any]:
    """Print everything; return the headline numbers for `--json`."""
    by_phase = {phase.label: phase for phase in phases}
    list_calls = list_shares(sides, by_phase)
    costs = {
        side.name: cost_of(side, by_phase[side.phase].stats, list_calls[side.name])
        for side in sides
    }
    print_header(params, stack, sides, load_before)
    columns = [side_rows(side, costs[side.name], params.mix) for side in sides]
    print_table(
        "Results",
        ["", *(side.label for side in sides)],
        [[label, *(column[i][1] for column in columns)] for i, (label, _) in enumerate(columns[0])],
    )
    rows = []
    for side in sides:
        young, old = age_split(side, FIRST_MINUTE)
        for name, lat in (("age < 60s", young), ("age >= 60s", old)):
            top = max(lat) if lat else None
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            rows.append([f"{side.label}, {name} at settle", str(len(lat)), fmt(p50), fmt(p99)])
            rows[-1].append(fmt(top))
    print_table(
        "Latency at the subscriber by payment age at settle",
        ["", "count", "p50 ms", "p99 ms", "max ms"],
        rows,
    )
    mix_costs: dict[str, dict[str, ClassCost]] = {}
    if params.mix:
        mix_costs = {
            side.name: class_costs(side, by_phase[side.phase].stats, list_calls[side.name])
            for side in sides
        }
        mix_report(params, sides, mix_costs, list_calls)
    cost_values = cost_section(params, sides, phases, costs)
    print_diagnostics(sides, costs, phases)
    print(f"  total wall time: {time.time() - started:.1f}s")
    values = headline(params, sides, costs, mix_costs, list_calls)
    values.update(cost_values)
    return values


def headline(
    params: Params,
    sides: list[Side],
    costs: dict[str, Cost],
    mix_costs: dict[str, dict[str, ClassCost]],
    list_calls: dict[str, float],
) -> dict[str, Any]:
    """The flat JSON object `--json` writes (read by `bench/run_all`)."""
    values: dict[str, Any] = {
        "bench": "detection",
        "mode": "mix" if params.mix else "latency",
        "payments": params.payments,
        "seed": params.seed,
        "sides": ",".join(side.name for side in sides),
        "problems": sum(side.problems() for side in sides),
        "worker_concurrency": params.worker_concurrency,
        "create_over_s": params.create_over,
    }
    if params.mix:
        counts = mix_counts(params.payments, params.mix_shares)
        values["mix_expiration_s"] = params.expiration
        for name, share, count in zip(MIX_CLASSES, params.mix_shares, counts, strict=True):
            values[f"mix_share_{name}"] = share
            values[f"mix_count_{name}"] = count
    else:
        values["settle_window_s"] = params.duration
    for side in sides:
        values.update(side_headline(side, costs[side.name], list_calls[side.name], params.mix))
        for name, cost in mix_costs.get(side.name, {}).items():
            values[f"{side.name}_requests_per_payment_{name}"] = cost.requests
        if isinstance(side, NaiveSide):
            values["naive_mean_interval_s"] = side.loop.mean_gap
            values["naive_kept_promise"] = side.loop.kept_promise()
    return values


def side_headline(side: Side, cost: Cost, list_calls: float, mix: bool) -> dict[str, Any]:
    prefix = side.name
    lat = latencies_ms(side)
    outbox = latencies_ms(side, at="detected")
    n = max(1, len(side.ids))
    values: dict[str, Any] = {
        f"{prefix}_detected": sum(
            1 for pid in side.checked() if side.expected[pid] and pid in side.reported
        ),
        f"{prefix}_problems": side.problems(),
        f"{prefix}_redeliveries": side.redeliveries,
        f"{prefix}_requests_per_payment": cost.total / n,
        f"{prefix}_list_calls_per_payment": list_calls / n,
        f"{prefix}_latency_ms_max": max(lat) if lat else None,
        f"{prefix}_detected_ms_max": max(outbox) if outbox else None,
    }
    for p in (50, 95, 99):
        values[f"{prefix}_latency_ms_p{p}"] = percentile(lat, p)
        values[f"{prefix}_detected_ms_p{p}"] = percentile(outbox, p)
    if mix:
        expiry = expiry_latencies_ms(side)
        values[f"{prefix}_expiry_ms_p50"] = percentile(expiry, 50)
        values[f"{prefix}_expiry_ms_p99"] = percentile(expiry, 99)
        for name in MIX_CLASSES:
            pids = [pid for pid in side.checked() if side.classes.get(pid) == name]
            values[f"{prefix}_latency_ms_p50_{name}"] = percentile(latencies_ms(side, pids), 50)
    return values
