"""Steady state: what watching N pending payments costs when nothing is changing.

For each N in `--sizes`, on a fresh redis-server of its own: seed the simulator with N
`receiving` payments of long expiry, make the watcher watch them all (from the list pages by
default, `--adopt watch`: `watch_existing` per id), start the Procfile's worker and beat at
production defaults, wait out `--warmup`, then measure for `--minutes`: Voltage requests per
minute, the worker's and beat's CPU, Redis memory. Next to it the naive 2 s loop's requests per
minute by arithmetic (N x 30) and a measured row of that loop for 1,000 payments. The point:
the watcher's requests per minute must not grow with N. More: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
from bench.harness import API_KEY, ENV_ID, ORG_ID, Stack, fmt
from bench.naive import NaiveLoop, naive_threads
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
    p = h.parser("bench.steady", "Steady state: Voltage requests/min, CPU and Redis memory for "
                 "N pending.")  # fmt: skip
    h.options(
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
    seed_how: str = ""
    adopt_s: float = 0.0
    adopt_how: str = ""
    minutes: float = 0.0
    requests: int = 0  # the simulator's count over the window
    purposes: dict[str, int] = field(default_factory=dict)  # the counters' deltas
    worker_cpu: float | None = None  # % of one core
    beat_cpu: float | None = None
    redis_mib: float = 0.0
    note: str = ""

    @property
    def per_minute(self) -> float:
        return self.requests / self.minutes if self.minutes else 0.0


def client(stack: Stack) -> VoltageClient:
    return VoltageClient(base_url=f"{stack.sim_root}/v1", api_key=API_KEY,
                         organization_id=ORG_ID, environment_id=ENV_ID)  # fmt: skip


def seed(stack: Stack, n: int, wallet: str, expiration: int) -> tuple[list[str], str]:
    """N receiving payments: the bulk route, else (an older simulator) one create each."""
    ids: list[str] = []
    while len(ids) < n:
        body = {"count": min(BULK_MAX, n - len(ids)), "wallet_id": wallet, "expiration":
                expiration, "organization_id": ORG_ID, "environment_id": ENV_ID}  # fmt: skip
        response = stack.http.post(f"{stack.sim_root}/_sim/payments/bulk", json=body, timeout=600)
        if response.status_code in (404, 405) and not ids:
            break
        response.raise_for_status()
        ids.extend(response.json()["ids"])
    else:
        return ids, "POST /_sim/payments/bulk"
    if n > 20_000:
        raise RuntimeError("seeding more than 20,000 needs the simulator's /_sim/payments/bulk")
    with client(stack) as voltage, ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: voltage.submit_receive(wallet_id=wallet,
                            amount_msats=1_000 + i, expiration=expiration), range(n)))  # fmt: skip

    def ready() -> bool:
        return all(stack.sim("GET", f"/payments/{p}")["status"] == "receiving" for p in ids)

    h.wait_for("the seeded payments to be receiving", ready, 120)
    return ids, "one create each (no bulk route)"


_ADOPTER: dict[str, Any] = {}


def _adopter_init(values: dict[str, str], spread: float | None) -> None:
    """In each adopting process: a Runtime of its own."""
    from watcher.runtime import Runtime

    _ADOPTER.update(rt=Runtime.from_settings(h.settings_from(values)), spread=spread)


def _adopt_chunk(raws: list[dict[str, Any]]) -> int:
    """Adopt from list answers; the first read where the watcher itself would schedule it (as
    `watch_existing` does: with healthy sweeps and a known expiry, the expiry check), or
    spread uniformly over `--first-poll-spread`."""
    rt, spread, adopted = _ADOPTER["rt"], _ADOPTER["spread"], 0
    for raw in raws:
        now, payment = time.time(), Payment.from_api(raw)
        first = now + (random.uniform(0.0, spread) if spread is not None else 60.0)
        if rt.store.adopt(payment, source="watched", now=now, first_poll_at=first):
            adopted += 1
            record = rt.store.get(payment.id) if spread is None else None
            if record is not None:
                rt.store.reschedule(payment.id, rt.policy.next_poll(record, now))
    return adopted


def adopt_from_list(stack: Stack, values: dict[str, str], spread: float | None, n: int) -> None:
    """Watch every receiving payment of the wallet from list pages: no Voltage read per
    payment. Adopting decodes each BOLT11 (ms of pure Python): one process per CPU."""
    with client(stack) as voltage:
        raws = [p.raw for p in voltage.iter_payments(limit=1000, wallet_id=WALLET,
                statuses=["receiving"], sort_key="created_at", sort_order="ASC")]  # fmt: skip
    chunks = [raws[i : i + ADOPT_CHUNK] for i in range(0, len(raws), ADOPT_CHUNK)]
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_adopter_init,
                             initargs=(values, spread)) as pool:  # fmt: skip
        adopted = sum(pool.map(_adopt_chunk, chunks))
    if adopted != n:
        raise RuntimeError(f"adopted {adopted} payments from the list, expected {n}")


def snapshot(stack: Stack, rt: Any) -> tuple[float, int, dict[str, int], dict[str, Any]]:
    cpu = {c.name: h.group_cpu(h.pid_of(c)) for c in stack.children if c.name in ("worker", "beat")}
    requests_so_far = int(stack.sim("GET", "/stats")["requests"])
    return time.monotonic(), requests_so_far, h.by_purpose(rt.store.counters()), cpu


def percent(a: float | None, b: float | None, seconds: float) -> float | None:
    return None if a is None or b is None or seconds <= 0 else 100.0 * (b - a) / seconds


def measure_size(stack: Stack, a: Any, n: int) -> Row:
    """One size on a redis-server of its own, started and stopped here."""
    row, server = Row(n), stack.new_redis(f"redis-n{n}")
    try:
        values = stack.values(f"{WALLET}-n{n}", server.url, VOLTAGE_WALLET_ID=WALLET)
        rt = stack.runtime(values)
        began = time.monotonic()
        ids, row.seed_how = seed(stack, n, WALLET, a.expiration)
        row.seed_s = time.monotonic() - began
        h.log(f"N={n}: seeded in {row.seed_s:.1f}s ({row.seed_how})")
        began = time.monotonic()
        if a.adopt == "watch":
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda pid: watch_existing(rt, pid), ids))
            row.adopt_how = "watch_existing (a Voltage read each)"
        else:
            adopt_from_list(stack, values, a.first_poll_spread, n)
            spread = a.first_poll_spread
            first = f"spread over {spread:g}s" if spread is not None else (
                "where the watcher's policy puts it")  # fmt: skip
            row.adopt_how = f"store.adopt from list pages, a process per CPU; first read {first}"
        row.adopt_s = time.monotonic() - began
        h.log(f"N={n}: watched in {row.adopt_s:.1f}s ({row.adopt_how})")
        concurrency = ["--concurrency", str(a.worker_concurrency)] if a.worker_concurrency else []
        stack.worker("worker", values, "--loglevel", "INFO", *concurrency, rt=rt)
        stack.beat("beat", values, rt=rt)
        h.log(f"N={n}: worker and beat up; warming up for {a.warmup:g}s")
        h.sleep_watching(a.warmup, stack.children)
        t0, r0, c0, cpu0 = snapshot(stack, rt)
        h.log(f"N={n}: measuring for {a.minutes:g} min")
        h.sleep_watching(a.minutes * 60, stack.children)
        t1, r1, c1, cpu1 = snapshot(stack, rt)
        row.minutes, row.requests = (t1 - t0) / 60, r1 - r0
        row.purposes = {k: v - c0.get(k, 0) for k, v in c1.items()}
        row.worker_cpu = percent(cpu0.get("worker"), cpu1.get("worker"), t1 - t0)
        row.beat_cpu = percent(cpu0.get("beat"), cpu1.get("beat"), t1 - t0)
        row.redis_mib = int(rt.redis.info("memory")["used_memory"]) / 2**20
        h.log(f"N={n}: {row.per_minute:,.0f} Voltage requests/min")
        return row
    finally:
        stack.stop_children("beat", "worker")
        server.stop()
        with contextlib.suppress(requests.RequestException):
            stack.sim("POST", "/reset")


def measure_naive(stack: Stack, a: Any) -> Row:
    """The naive 2 s loop on 1,000 seeded payments of its own wallet, measured the same way."""
    row, began = Row(NAIVE_SIZE, adopt_how="plain requests loop"), time.monotonic()
    ids, row.seed_how = seed(stack, NAIVE_SIZE, NAIVE_WALLET, a.expiration)
    row.seed_s = time.monotonic() - began
    threads = naive_threads(NAIVE_SIZE)
    loop = NaiveLoop(stack.payments_url, API_KEY, interval=2.0, threads=threads)
    for pid in ids:
        loop.add(pid)
    loop.start()
    try:
        time.sleep(min(a.warmup, 10.0))
        r0, cpu0, t0 = stack.sim("GET", "/stats")["requests"], time.process_time(), time.monotonic()
        time.sleep(a.minutes * 60)
        r1, cpu1, t1 = stack.sim("GET", "/stats")["requests"], time.process_time(), time.monotonic()
    finally:
        loop.stop()
        with contextlib.suppress(requests.RequestException):
            stack.sim("POST", "/reset")
    row.minutes, row.requests, row.worker_cpu = (
        (t1 - t0) / 60,
        r1 - r0,
        percent(cpu0, cpu1, t1 - t0),
    )
    promise = "" if loop.kept_promise() else " (could NOT keep its 2 s promise)"
    row.note = f"mean interval {fmt(loop.mean_gap, 2)} s with {loop.threads} threads{promise}"
    return row


def print_report(stack: Stack, a: Any, rows: list[Row], naive: Row | None) -> None:
    h.header("steady state: N pending payments, nothing changing", stack)
    layout = (
        f"--concurrency {a.worker_concurrency}" if a.worker_concurrency else "one child per CPU"
    )
    print(
        f"watcher: production defaults; the Procfile's worker (prefork, {layout}) and beat; "
        f"payments receiving, expiry {a.expiration}s; warm-up {a.warmup:g}s, then "
        f"{a.minutes:g} min measured; a fresh redis-server per size\n"
    )
    heads = ["N", "watcher req/min", *(f"{p}/min" for p in SHOWN_PURPOSES), "counted/min",
             "worker CPU %", "beat CPU %", "Redis MiB", "naive req/min (N x 30)"]  # fmt: skip
    table = [[f"{r.size:,}", fmt(r.per_minute, 1),
              *(fmt(r.purposes.get(p, 0) / max(r.minutes, 1e-9), 1) for p in SHOWN_PURPOSES),
              fmt(sum(r.purposes.values()) / max(r.minutes, 1e-9), 1), fmt(r.worker_cpu, 1),
              fmt(r.beat_cpu, 1), fmt(r.redis_mib, 1), f"{r.size * 30:,}"]
             for r in rows]  # fmt: skip
    if naive is not None:
        blank = ["-"] * len(SHOWN_PURPOSES)
        table.append([f"naive {naive.size:,}", fmt(naive.per_minute, 1), *blank, "-",
                      fmt(naive.worker_cpu, 1), "-", "-", "-"])  # fmt: skip
    h.print_table("Voltage requests per minute and CPU, steady state", heads, table)
    for r in rows:
        every = ", ".join(f"{k}={v}" for k, v in r.purposes.items() if v)
        print(
            f"  N={r.size:,}: seeded in {r.seed_s:.1f}s ({r.seed_how}); watched in "
            f"{r.adopt_s:.1f}s ({r.adopt_how}, {r.size / max(r.adopt_s, 1e-9):,.0f}/s); all "
            f"purposes over the window: {every}"
        )
    if naive is not None:
        print(f"  naive {naive.size:,}: measured on its own wallet, CPU = this process's "
              f"(worker CPU column); {naive.note}")  # fmt: skip
    small, large = rows[0], rows[-1]
    if len(rows) > 1 and small.per_minute:
        print(
            f"  watcher req/min at N={large.size:,} is {large.per_minute / small.per_minute:.2f}x "
            f"that at N={small.size:,} (N grew {large.size / small.size:,.0f}x; the goal is ~1x)"
        )
    print()


def headline(rows: list[Row], naive: Row | None) -> dict[str, Any]:
    values: dict[str, Any] = {"bench": "steady", "sizes": ",".join(str(r.size) for r in rows)}
    for r in rows:
        values |= {f"n{r.size}_requests_per_min": r.per_minute,
                   f"n{r.size}_worker_cpu_pct": r.worker_cpu, f"n{r.size}_beat_cpu_pct": r.beat_cpu,
                   f"n{r.size}_redis_mib": r.redis_mib, f"n{r.size}_adopt_s": r.adopt_s,
                   f"n{r.size}_naive_requests_per_min": r.size * 30}  # fmt: skip
    if naive is not None:
        values |= {"naive_measured_size": naive.size,
                   "naive_measured_requests_per_min": naive.per_minute,
                   "naive_measured_cpu_pct": naive.worker_cpu}  # fmt: skip
    return values


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)

    def body(stack: Stack) -> int:
        h.log(f"sizes {', '.join(f'{n:,}' for n in a.sizes)}")
        stack.start(generating_delay=0.05, redis=False)  # a redis-server per size instead
        configure_logging(h.settings_from(stack.values(WALLET)))
        rows = [measure_size(stack, a, n) for n in a.sizes]
        naive = None
        if not a.no_naive:
            h.log(f"naive: {NAIVE_SIZE:,} payments, {a.minutes:g} min")
            naive = measure_naive(stack, a)
        print_report(stack, a, rows, naive)
        return h.finish(a, headline(rows, naive), [])

    return h.run_in_stack("steady", a, body)


if __name__ == "__main__":
    sys.exit(main())
