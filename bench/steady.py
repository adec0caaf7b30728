"""Steady state: what watching N pending payments costs when nothing is changing.

Per N in `--sizes`, on a redis-server of its own: N `receiving` payments of long expiry, all
watched (from the list pages, or `--adopt watch`: `watch_existing` per id), the Procfile's worker
and beat at production defaults; after `--warmup`, `--minutes` measured: Voltage requests/min,
worker and beat CPU, Redis memory, next to the naive 2 s loop (N x 30 by arithmetic, measured for
1,000). The watcher's requests per minute must not grow with N. More: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from bench import harness as h
from bench import report as rep
from bench.harness import API_KEY, ENV_ID, ORG_ID, Stack
from bench.naive import NaiveLoop, naive_threads
from bench.report import fmt
from watcher.engine.watching import watch_existing
from watcher.logging import configure_logging
from watcher.voltage.client import VoltageClient
from watcher.voltage.models import Payment

WALLET, NAIVE_WALLET = "wallet-steady-watcher", "wallet-steady-naive"
BULK_MAX, NAIVE_SIZE, ADOPT_CHUNK = 10_000, 1_000, 2_000
SHOWN_PURPOSES = ("sweep", "reconcile", "confirm", "expiry_check", "fallback_poll", "poll")


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x.replace("_", "")) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated payment counts") from None
    if not sizes or any(not 1 <= n <= 1_000_000 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be 1..1,000,000")
    return sizes


def parse_args(argv: Sequence[str] | None) -> Any:
    p = rep.parser("bench.steady", "Steady state: Voltage requests/min, CPU and Redis memory for "
                 "N pending.")  # fmt: skip
    rep.options(
        p,
        ("--sizes", parse_sizes, (1_000, 10_000, 100_000), "default 1000,10000,100000"),
        ("--minutes", float, 2.0, "measured window per size (default 2)"),
        ("--warmup", float, 30.0, "seconds after start before measuring"),
        ("--expiration", int, 86_400, "of the seeded invoices (default 86400)"),
        ("--adopt", ("list", "watch"), "list", "list: store.adopt from list pages (default); "
         "watch: watch_existing per id"),
        ("--first-poll-spread", float, None, "SECONDS: spread the adopted payments' first "
         "scheduled read uniformly over this long (default: where the watcher's own poll "
         "policy puts it, as watch_existing does)"),
        ("--worker-concurrency", int, None, "override the Procfile's"),
        ("--no-naive", "store_true", False, "skip the measured naive row"),
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.warmup < 0 or not 60 <= a.expiration <= 30 * 86400:
        p.error("need --minutes > 0, --warmup >= 0, --expiration 60..2592000")
    return a


@dataclass
class Row:
    size: int
    seed_s: float = 0.0
    adopt_s: float = 0.0
    adopt_how: str = ""
    minutes: float = 0.0
    requests: int = 0  # the simulator's count over the window
    purposes: dict[str, int] = field(default_factory=dict)  # the counters' deltas
    cpu: dict[str, float | None] = field(default_factory=dict)  # % of one core, by process
    redis_mib: float = 0.0
    note: str = ""

    @property
    def per_minute(self) -> float:
        return self.requests / self.minutes if self.minutes else 0.0


def seed(stack: Stack, row: Row, wallet: str, expiration: int) -> list[str]:
    """N receiving payments through the simulator's bulk route (no create each)."""
    began, ids = time.monotonic(), list[str]()
    while len(ids) < row.size:
        body = {"count": min(BULK_MAX, row.size - len(ids)), "wallet_id": wallet, "expiration":
                expiration, "organization_id": ORG_ID, "environment_id": ENV_ID}  # fmt: skip
        ids += stack.sim("POST", "/payments/bulk", json=body)["ids"]
    row.seed_s = time.monotonic() - began
    return ids


def _adopt_chunk(values: dict[str, str], spread: float | None, raws: list[dict[str, Any]]) -> int:
    """In an adopting process, on a Runtime of its own: adopt from list answers, the first read
    where the watcher would schedule it (as `watch_existing` does) or spread over `spread`."""
    from watcher.runtime import Runtime

    rt, adopted = Runtime.from_settings(h.settings_from(values)), 0
    for raw in raws:
        now, payment = time.time(), Payment.from_api(raw)
        first = now + (random.uniform(0.0, spread) if spread is not None else 60.0)
        if rt.payments.adopt(payment, source="watched", now=now, first_poll_at=first):
            adopted += 1
            record = rt.payments.get(payment.id) if spread is None else None
            if record is not None:
                rt.payments.reschedule(payment.id, rt.poll_policy.next_poll(record, now))
    rt.redis.close()
    return adopted


def adopt_from_list(stack: Stack, values: dict[str, str], spread: float | None, n: int) -> str:
    """Watch the wallet's receiving payments from list pages (no Voltage read each); adopting
    decodes each BOLT11 (ms of pure Python): one process per CPU."""
    with VoltageClient(base_url=f"{stack.sim_root}/v1", api_key=API_KEY,
                       organization_id=ORG_ID, environment_id=ENV_ID) as voltage:  # fmt: skip
        raws = [p.raw for p in voltage.iter_payments(limit=1000, wallet_id=WALLET,
                statuses=["receiving"], sort_key="created_at", sort_order="ASC")]  # fmt: skip
    chunks = [raws[i : i + ADOPT_CHUNK] for i in range(0, len(raws), ADOPT_CHUNK)]
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        adopted = sum(pool.map(functools.partial(_adopt_chunk, values, spread), chunks))
    if adopted != n:
        raise RuntimeError(f"adopted {adopted} payments from the list, expected {n}")
    first = "where the watcher's policy puts it" if spread is None else f"spread over {spread:g}s"
    return f"store.adopt from list pages, a process per CPU; first read {first}"


def snapshot(stack: Stack, rt: Any) -> tuple[float, int, dict[str, int], dict[str, Any]]:
    cpu = {c.name: h.group_cpu(h.pid_of(c)) for c in stack.children if c.name in ("worker", "beat")}
    cpu["bench"] = time.process_time()
    counters = rep.by_purpose(rt.payments.counters()) if rt is not None else {}
    return time.monotonic(), int(stack.sim("GET", "/stats")["requests"]), counters, cpu


def measure(stack: Stack, row: Row, rt: Any, warmup: float, minutes: float) -> None:
    """After `warmup`, the Voltage requests, counters and CPU over `minutes` (a child dying fails
    it at once)."""
    h.sleep_watching(warmup, stack.children)
    t0, r0, c0, cpu0 = snapshot(stack, rt)
    rep.log(f"N={row.size}: measuring for {minutes:g} min")
    h.sleep_watching(minutes * 60, stack.children)
    t1, r1, c1, cpu1 = snapshot(stack, rt)
    row.minutes, row.requests = (t1 - t0) / 60, r1 - r0
    row.purposes = {k: v - c0.get(k, 0) for k, v in c1.items()}
    for name, v in cpu1.items():
        was = cpu0.get(name)
        row.cpu[name] = None if v is None or was is None else 100.0 * (v - was) / (t1 - t0)


def measure_size(stack: Stack, a: Any, n: int) -> Row:
    """One size on a redis-server of its own, started and stopped here."""
    row, server = Row(n), stack.new_redis(f"redis-n{n}")
    try:
        values = stack.values(f"{WALLET}-n{n}", server.url, VOLTAGE_WALLET_ID=WALLET)
        rt = stack.runtime(values)
        ids = seed(stack, row, WALLET, a.expiration)
        rep.log(f"N={n}: seeded in {row.seed_s:.1f}s (POST /_sim/payments/bulk)")
        began, row.adopt_how = time.monotonic(), "watch_existing (a Voltage read each)"
        if a.adopt == "watch":
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda pid: watch_existing(rt, pid), ids))
        else:
            row.adopt_how = adopt_from_list(stack, values, a.first_poll_spread, n)
        row.adopt_s = time.monotonic() - began
        rep.log(f"N={n}: watched in {row.adopt_s:.1f}s ({row.adopt_how})")
        concurrency = ["--concurrency", str(a.worker_concurrency)] if a.worker_concurrency else []
        stack.worker("worker", values, "--loglevel", "INFO", *concurrency, rt=rt)
        stack.beat("beat", values, rt=rt)
        rep.log(f"N={n}: worker and beat up; warming up for {a.warmup:g}s")
        measure(stack, row, rt, a.warmup, a.minutes)
        row.redis_mib = int(rt.redis.info("memory")["used_memory"]) / 2**20
        rep.log(f"N={n}: {row.per_minute:,.0f} Voltage requests/min")
        return row
    finally:
        stack.stop_children("beat", "worker")
        server.stop()
        with contextlib.suppress(requests.RequestException):
            stack.sim("POST", "/reset")


def measure_naive(stack: Stack, a: Any) -> Row:
    """The naive 2 s loop on 1,000 seeded payments of its own wallet, measured the same way
    (its CPU: this process's, in the worker column)."""
    row = Row(NAIVE_SIZE, adopt_how="plain requests loop")
    loop = NaiveLoop(stack.payments_url, API_KEY, interval=2.0, threads=naive_threads(NAIVE_SIZE))
    for pid in seed(stack, row, NAIVE_WALLET, a.expiration):
        loop.add(pid)
    loop.start()
    try:
        measure(stack, row, None, min(a.warmup, 10.0), a.minutes)
    finally:
        loop.stop()
        with contextlib.suppress(requests.RequestException):
            stack.sim("POST", "/reset")
    row.cpu["worker"] = row.cpu["bench"]
    promise = "" if loop.kept_promise() else " (could NOT keep its 2 s promise)"
    row.note = f"mean interval {fmt(loop.mean_gap, 2)} s with {loop.threads} threads{promise}"
    return row


def print_report(stack: Stack, a: Any, rows: list[Row], naive: Row | None) -> None:
    rep.header("steady state: N pending payments, nothing changing", stack)
    layout = (
        f"--concurrency {a.worker_concurrency}" if a.worker_concurrency else "one child per CPU"
    )
    print(f"watcher: production defaults; the Procfile's worker (prefork, {layout}) and beat; "
          f"payments receiving, expiry {a.expiration}s; warm-up {a.warmup:g}s, then "
          f"{a.minutes:g} min measured; a fresh redis-server per size\n")  # fmt: skip
    heads = ["N", "watcher req/min", *(f"{p}/min" for p in SHOWN_PURPOSES), "counted/min",
             "worker CPU %", "beat CPU %", "Redis MiB", "naive req/min (N x 30)"]  # fmt: skip
    table = []
    for r in rows:
        counted = [*(r.purposes.get(p, 0) for p in SHOWN_PURPOSES), sum(r.purposes.values())]
        table.append([f"{r.size:,}", fmt(r.per_minute, 1),
                      *(fmt(v / max(r.minutes, 1e-9), 1) for v in counted),
                      *(fmt(v, 1) for v in (r.cpu.get("worker"), r.cpu.get("beat"), r.redis_mib)),
                      f"{r.size * 30:,}"])  # fmt: skip
    if naive is not None:
        blank = ["-"] * (len(SHOWN_PURPOSES) + 1)
        table.append([f"naive {naive.size:,}", fmt(naive.per_minute, 1), *blank,
                      fmt(naive.cpu.get("worker"), 1), "-", "-", "-"])  # fmt: skip
    rep.print_table("Voltage requests per minute and CPU, steady state", heads, table)
    for r in rows:
        every = ", ".join(f"{k}={v}" for k, v in r.purposes.items() if v)
        print(f"  N={r.size:,}: seeded in {r.seed_s:.1f}s (POST /_sim/payments/bulk); watched "
              f"in {r.adopt_s:.1f}s ({r.adopt_how}, {r.size / max(r.adopt_s, 1e-9):,.0f}/s); "
              f"all purposes over the window: {every}")  # fmt: skip
    if naive is not None:
        print(f"  naive {naive.size:,}: measured on its own wallet, CPU = this process's "
              f"(worker CPU column); {naive.note}")  # fmt: skip
    small, large = rows[0], rows[-1]
    if len(rows) > 1 and small.per_minute:
        print(f"  watcher req/min at N={large.size:,} is {large.per_minute / small.per_minute:.2f}"
              f"x that at N={small.size:,} (N grew {large.size / small.size:,.0f}x; the goal is "
              "~1x)")  # fmt: skip
    print()


def headline(rows: list[Row], naive: Row | None) -> dict[str, Any]:
    values: dict[str, Any] = {"bench": "steady", "sizes": ",".join(str(r.size) for r in rows)}
    for r in rows:
        values |= {f"n{r.size}_{k}": v for k, v in (
            ("requests_per_min", r.per_minute), ("worker_cpu_pct", r.cpu.get("worker")),
            ("beat_cpu_pct", r.cpu.get("beat")), ("redis_mib", r.redis_mib),
            ("adopt_s", r.adopt_s), ("naive_requests_per_min", r.size * 30))}  # fmt: skip
    if naive is not None:
        values |= {"naive_measured_size": naive.size,
                   "naive_measured_requests_per_min": naive.per_minute,
                   "naive_measured_cpu_pct": naive.cpu.get("worker")}  # fmt: skip
    return values


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)

    def body(stack: Stack) -> int:
        rep.log(f"sizes {', '.join(f'{n:,}' for n in a.sizes)}")
        stack.start(generating_delay=0.05, redis=False)  # a redis-server per size instead
        configure_logging(h.settings_from(stack.values(WALLET)))
        rows = [measure_size(stack, a, n) for n in a.sizes]
        naive = None
        if not a.no_naive:
            rep.log(f"naive: {NAIVE_SIZE:,} payments, {a.minutes:g} min")
            naive = measure_naive(stack, a)
        print_report(stack, a, rows, naive)
        return rep.finish(a, headline(rows, naive), [])

    return h.run_in_stack("steady", a, body)


if __name__ == "__main__":
    sys.exit(main())
