"""Steady state: what watching N pending payments costs when nothing is changing.

For each N in `--sizes` (default 1,000, 10,000, 100,000), on a fresh redis-server of the bench's
own (a new one per size, on a free port, in the temp dir), the script:

1. seeds the simulator with N `receiving` payments of long expiry (86,400 s) on the watcher's
   wallet, through `POST /_sim/payments/bulk` (10,000 per call);
2. makes the watcher watch them all, fast: by default from the simulator's list pages
   (`rt.store.adopt(payment, source="watched", ...)`, no Voltage read per payment, then the
   first read rescheduled where the watcher's own poll policy puts it, as `watch_existing`
   does; `--first-poll-spread S` spreads it uniformly over S seconds instead); `--adopt watch`
   uses `watcher.engine.watching.watch_existing` itself (one Voltage read each); the time taken
   and the method are printed;
3. starts the Procfile's worker (prefork, one child per CPU) and beat at production defaults,
   waits out `--warmup`, then measures for `--minutes`: Voltage requests per minute (the
   simulator's count, and the watcher's own counters by purpose), the CPU used by beat and by
   the worker (its whole process group, prefork children included, from /proc utime+stime) as
   % of one core, and Redis' used memory.

One row per size; next to it the naive 2 s loop's requests per minute by arithmetic (N x 30),
and a measured row of that loop for 1,000 payments (plain requests, its own wallet, CPU of this
process). The point: the watcher's requests per minute must not grow with N.

    .venv/bin/python -m bench.steady                          # ~15 minutes
    .venv/bin/python -m bench.steady --sizes 200 --minutes 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    Child,
    beat_ready,
    child_env,
    exit_on_sigterm,
    fmt,
    group_cpu,
    load_average,
    log,
    log_tails,
    machine_line,
    print_table,
    procfile_beat,
    procfile_worker,
    redis_server_version,
    remove_or_keep,
    start_simulator,
    wait_for,
    worker_ready,
    write_json,
)
from bench.naive import NaiveLoop, naive_threads
from bench.voltage_cost import by_purpose, minus
from watcher.engine.watching import watch_existing
from watcher.logging import configure_logging
from watcher.redis_server import RedisServer, free_port
from watcher.runtime import Runtime
from watcher.settings import load_settings
from watcher.voltage.client import VoltageClient
from watcher.voltage.models import Payment

API_KEY = "bench-sim-key-0123456789abcdef"
ORG_ID = "org-steady"
ENV_ID = "env-steady"
WALLET = "wallet-steady-watcher"
NAIVE_WALLET = "wallet-steady-naive"
BULK_MAX = 10_000
NAIVE_SIZE = 1_000
ADOPT_CHUNK = 2_000
SHOWN_PURPOSES = ("sweep", "reconcile", "confirm", "expiry_check", "fallback_poll", "poll")


@dataclass(frozen=True)
class Params:
    sizes: tuple[int, ...]
    minutes: float
    warmup: float
    expiration: int
    adopt: str  # "list" | "watch"
    first_poll_spread: float | None  # None: the watcher's sparse poll interval
    worker_concurrency: int | None
    naive: bool
    keep: bool
    json_path: Path | None


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


class Simulator:
    """The simulator child and its control surface."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.http = requests.Session()
        self.port = free_port()
        self.child: Child | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    @property
    def payments_url(self) -> str:
        return f"{self.base_url}/organizations/{ORG_ID}/environments/{ENV_ID}/payments"

    def start(self) -> None:
        self.child = start_simulator(
            self.port, API_KEY, generating_delay=0.05, cwd=self.tmp, http=self.http
        )

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, f"{self.root}/_sim{path}", json=body, timeout=600)
        response.raise_for_status()
        return response.json()

    def requests_so_far(self) -> int:
        return int(self.control("GET", "/stats")["requests"])

    def seed(self, n: int, wallet: str, expiration: int) -> tuple[list[str], str]:
        """N receiving payments: the bulk route, else (an older simulator) one create each."""
        ids: list[str] = []
        while len(ids) < n:
            body = {
                "count": min(BULK_MAX, n - len(ids)),
                "wallet_id": wallet,
                "expiration": expiration,
                "organization_id": ORG_ID,
                "environment_id": ENV_ID,
            }
            response = self.http.post(f"{self.root}/_sim/payments/bulk", json=body, timeout=600)
            if response.status_code in (404, 405) and not ids:
                return self._create_each(n, wallet, expiration), "one create each (no bulk route)"
            response.raise_for_status()
            ids.extend(response.json()["ids"])
        return ids, "POST /_sim/payments/bulk"

    def _create_each(self, n: int, wallet: str, expiration: int) -> list[str]:
        if n > 20_000:
            raise RuntimeError("seeding more than 20,000 needs the simulator's /_sim/payments/bulk")
        with VoltageClient(
            base_url=self.base_url, api_key=API_KEY, organization_id=ORG_ID, environment_id=ENV_ID
        ) as client:

            def create(i: int) -> str:
                return client.submit_receive(
                    wallet_id=wallet, amount_msats=1_000 + i, expiration=expiration
                )

            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(create, range(n)))
        wait_for("the seeded payments to be receiving", lambda: self._all_ready(ids), 120)
        return ids

    def _all_ready(self, ids: list[str]) -> bool:
        return all(self.control("GET", f"/payments/{pid}")["status"] == "receiving" for pid in ids)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
        self.http.close()


# --- one size ---------------------------------------------------------------------------------


def watcher_values(redis_url: str, sim: Simulator, data_dir: Path) -> dict[str, str]:
    return {
        "WATCHER_REDIS_URL": redis_url,
        "VOLTAGE_API_URL": sim.base_url,
        "VOLTAGE_API_KEY": API_KEY,
        "VOLTAGE_ORGANIZATION_ID": ORG_ID,
        "VOLTAGE_ENVIRONMENT_ID": ENV_ID,
        "VOLTAGE_WALLET_ID": WALLET,
        "WATCHER_DATA_DIR": str(data_dir),
        "WATCHER_LOG_FORMAT": "json",
        "WATCHER_LOG_LEVEL": "WARNING",
    }


def adopt_from_list(values: dict[str, str], sim: Simulator, spread: float | None, n: int) -> int:
    """Watch every receiving payment of the wallet from list pages: no Voltage read per
    payment. Adopting decodes each BOLT11 (milliseconds of pure Python), so pages are adopted
    by one process per CPU."""
    with VoltageClient(
        base_url=sim.base_url, api_key=API_KEY, organization_id=ORG_ID, environment_id=ENV_ID
    ) as client:
        items = client.iter_payments(
            limit=1000,
            wallet_id=WALLET,
            statuses=["receiving"],
            sort_key="created_at",
            sort_order="ASC",
        )
        raws = [payment.raw for payment in items]
    chunks = [raws[i : i + ADOPT_CHUNK] for i in range(0, len(raws), ADOPT_CHUNK)]
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_adopter_init, initargs=(values, spread)
    ) as pool:
        adopted = sum(pool.map(_adopt_chunk, chunks))
    if adopted != n:
        raise RuntimeError(f"adopted {adopted} payments from the list, expected {n}")
    return adopted


_ADOPTER: dict[str, Any] = {}


def _adopter_init(values: dict[str, str], spread: float | None) -> None:
    """In each adopting process: a Runtime of its own."""
    settings = load_settings(**{k.lower(): v for k, v in values.items()})
    _ADOPTER["rt"] = Runtime.from_settings(settings)
    _ADOPTER["spread"] = spread


def _adopt_chunk(raws: list[dict[str, Any]]) -> int:
    rt: Runtime = _ADOPTER["rt"]
    spread: float | None = _ADOPTER["spread"]
    adopted = 0
    for raw in raws:
        now = time.time()
        payment = Payment.from_api(raw)
        if spread is not None:
            first = now + random.uniform(0.0, spread)
            adopted += rt.store.adopt(payment, source="watched", now=now, first_poll_at=first)
        elif rt.store.adopt(payment, source="watched", now=now, first_poll_at=now + 60.0):
            adopted += 1
            _first_read_by_policy(rt, payment.id, now)
    return adopted


def _first_read_by_policy(rt: Runtime, payment_id: str, now: float) -> None:
    """Schedule the first read where the watcher itself would (as `watch_existing` does):
    with healthy sweeps and a known expiry, that is the expiry check."""
    record = rt.store.get(payment_id)
    if record is not None:
        rt.store.reschedule(payment_id, rt.policy.next_poll(record, now))


def adopt_by_watch(rt: Runtime, ids: list[str]) -> int:
    """`watch_existing` for each id: one Voltage read each (counted as `adopt`)."""
    with ThreadPoolExecutor(8) as pool:
        results = pool.map(lambda pid: watch_existing(rt, pid), ids)
        return sum(1 for result in results if result.created)


def sleep_watching(seconds: float, children: Sequence[Child]) -> None:
    """Wait `seconds`, failing at once if a child dies."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        for child in children:
            if not child.alive:
                raise RuntimeError(f"{child.name} exited during the measurement:\n{child.tail()}")
        time.sleep(min(left, 0.5))


@dataclass
class Snapshot:
    at: float
    requests: int
    counters: dict[str, int]
    worker: float | None
    beat: float | None


def snapshot(sim: Simulator, rt: Runtime, worker: Child, beat: Child) -> Snapshot:
    def pgid(child: Child) -> int | None:
        return child.process.pid if child.process is not None else None

    return Snapshot(
        time.monotonic(),
        sim.requests_so_far(),
        by_purpose(rt.store.counters()),
        group_cpu(pgid(worker)),
        group_cpu(pgid(beat)),
    )


def cpu_percent(a: float | None, b: float | None, seconds: float) -> float | None:
    return None if a is None or b is None or seconds <= 0 else 100.0 * (b - a) / seconds


def prepare(
    params: Params, n: int, rt: Runtime, values: dict[str, str], sim: Simulator, row: Row
) -> None:
    """Seed N receiving payments and make the watcher watch them all."""
    began = time.monotonic()
    ids, row.seed_how = sim.seed(n, WALLET, params.expiration)
    row.seed_s = time.monotonic() - began
    log(f"N={n}: seeded in {row.seed_s:.1f}s ({row.seed_how})")
    began = time.monotonic()
    if params.adopt == "watch":
        adopted = adopt_by_watch(rt, ids)
        row.adopt_how = "watch_existing (a Voltage read each)"
    else:
        spread = params.first_poll_spread
        adopted = adopt_from_list(values, sim, spread, n)
        first = (
            "where the watcher's policy puts it" if spread is None else f"spread over {spread:g}s"
        )
        row.adopt_how = f"store.adopt from list pages, a process per CPU; first read {first}"
    row.adopt_s = time.monotonic() - began
    log(f"N={n}: {adopted} watched in {row.adopt_s:.1f}s ({row.adopt_how})")


def start_celery(params: Params, values: dict[str, str], rt: Runtime, tmp: Path) -> list[Child]:
    env = child_env(values)
    worker = Child("worker", procfile_worker(params.worker_concurrency), env, tmp).start()
    schedule = Path(values["WATCHER_DATA_DIR"]) / "celerybeat-schedule"
    beat = Child("beat", procfile_beat(schedule), env, tmp).start()
    children = [worker, beat]
    wait_for("the worker", lambda: worker_ready(rt.redis.smembers, worker), 120, children)
    wait_for("beat", lambda: beat_ready(rt.store.counters, beat), 60, children)
    return children


def measure_size(params: Params, n: int, sim: Simulator, tmp: Path) -> Row:
    """One size on a redis-server of its own, started and stopped here."""
    row = Row(n)
    where = tmp / f"n{n}"
    (where / "data").mkdir(parents=True)
    redis = RedisServer(where / "redis")
    children: list[Child] = []
    rt: Runtime | None = None
    try:
        redis.start()
        values = watcher_values(redis.url, sim, where / "data")
        rt = Runtime.from_settings(load_settings(**{k.lower(): v for k, v in values.items()}))
        prepare(params, n, rt, values, sim, row)
        children = start_celery(params, values, rt, where)
        log(f"N={n}: worker and beat up; warming up for {params.warmup:g}s")
        sleep_watching(params.warmup, children)
        before = snapshot(sim, rt, children[0], children[1])
        log(f"N={n}: measuring for {params.minutes:g} min")
        sleep_watching(params.minutes * 60, children)
        after = snapshot(sim, rt, children[0], children[1])
        seconds = after.at - before.at
        row.minutes = seconds / 60
        row.requests = after.requests - before.requests
        row.purposes = minus(after.counters, before.counters)
        row.worker_cpu = cpu_percent(before.worker, after.worker, seconds)
        row.beat_cpu = cpu_percent(before.beat, after.beat, seconds)
        row.redis_mib = int(rt.redis.info("memory")["used_memory"]) / 2**20
        log(f"N={n}: {row.per_minute:,.0f} Voltage requests/min")
    except BaseException:
        log_tails(children)
        raise
    else:
        return row
    finally:
        for child in reversed(children):
            child.stop()
        if rt is not None:
            with contextlib.suppress(Exception):
                rt.redis.close()
        redis.stop()
        with contextlib.suppress(requests.RequestException):
            sim.control("POST", "/reset")


def measure_naive(params: Params, sim: Simulator) -> Row:
    """The naive 2 s loop on 1,000 seeded payments of its own wallet, measured the same way."""
    row = Row(NAIVE_SIZE, adopt_how="plain requests loop")
    began = time.monotonic()
    ids, row.seed_how = sim.seed(NAIVE_SIZE, NAIVE_WALLET, params.expiration)
    row.seed_s = time.monotonic() - began
    loop = NaiveLoop(sim.payments_url, API_KEY, interval=2.0, threads=naive_threads(NAIVE_SIZE))
    for pid in ids:
        loop.add(pid)
    loop.start()
    try:
        time.sleep(min(params.warmup, 10.0))
        a_requests, a_cpu, a_at = sim.requests_so_far(), time.process_time(), time.monotonic()
        time.sleep(params.minutes * 60)
        b_requests, b_cpu, b_at = sim.requests_so_far(), time.process_time(), time.monotonic()
    finally:
        loop.stop()
        with contextlib.suppress(requests.RequestException):
            sim.control("POST", "/reset")
    row.minutes = (b_at - a_at) / 60
    row.requests = b_requests - a_requests
    row.worker_cpu = cpu_percent(a_cpu, b_cpu, b_at - a_at)
    gap = loop.mean_gap
    row.note = f"mean interval {fmt(gap, 2)} s with {loop.threads} threads" + (
        "" if loop.kept_promise() else " (could NOT keep its 2 s promise)"
    )
    return row


# --- the report -------------------------------------------------------------------------------


def print_report(params: Params, rows: list[Row], naive: Row | None, load_before: str) -> None:
    print()
    print("=== voltage-watcher steady state: N pending payments, nothing changing ===")
    print(machine_line(redis_server_version(), load_before))
    concurrency = params.worker_concurrency
    print(
        f"watcher: production defaults; the Procfile's worker (prefork, "
        f"{'--concurrency ' + str(concurrency) if concurrency else 'one child per CPU'}) and "
        f"beat; payments receiving, expiry {params.expiration}s; warm-up {params.warmup:g}s, "
        f"then {params.minutes:g} min measured; a fresh redis-server per size"
    )
    print()
    headers = [
        "N",
        "watcher req/min",
        *(f"{p}/min" for p in SHOWN_PURPOSES),
        "counted/min",
        "worker CPU %",
        "beat CPU %",
        "Redis MiB",
        "naive req/min (N x 30)",
    ]
    table = []
    for row in rows:
        counted = sum(row.purposes.values())
        per_minute = max(row.minutes, 1e-9)
        table.append(
            [
                f"{row.size:,}",
                fmt(row.per_minute, 1),
                *(fmt(row.purposes.get(p, 0) / per_minute, 1) for p in SHOWN_PURPOSES),
                fmt(counted / per_minute, 1),
                fmt(row.worker_cpu, 1),
                fmt(row.beat_cpu, 1),
                fmt(row.redis_mib, 1),
                f"{row.size * 30:,}",
            ]
        )
    if naive is not None:
        blank = ["-"] * len(SHOWN_PURPOSES)
        cpu = fmt(naive.worker_cpu, 1)
        table.append(
            [f"naive {naive.size:,}", fmt(naive.per_minute, 1), *blank, "-", cpu, "-", "-", "-"]
        )
    print_table("Voltage requests per minute and CPU, steady state", headers, table)
    for row in rows:
        print(
            f"  N={row.size:,}: seeded in {row.seed_s:.1f}s ({row.seed_how}); watched in "
            f"{row.adopt_s:.1f}s ({row.adopt_how}, {row.size / max(row.adopt_s, 1e-9):,.0f}/s); "
            f"all purposes over the window: "
            + ", ".join(f"{k}={v}" for k, v in row.purposes.items() if v)
        )
    if naive is not None:
        print(
            f"  naive {naive.size:,}: measured on its own wallet, CPU = this process's "
            f"(worker CPU column); {naive.note}"
        )
    growth = growth_note(rows)
    if growth:
        print(f"  {growth}")
    print()


def growth_note(rows: list[Row]) -> str:
    if len(rows) < 2:
        return ""
    small, large = rows[0], rows[-1]
    if not small.per_minute:
        return ""
    factor = large.per_minute / small.per_minute
    return (
        f"watcher req/min at N={large.size:,} is {factor:.2f}x that at N={small.size:,} "
        f"(N grew {large.size / small.size:,.0f}x; the goal is ~1x)"
    )


def headline(rows: list[Row], naive: Row | None) -> dict[str, Any]:
    values: dict[str, Any] = {"bench": "steady", "sizes": ",".join(str(r.size) for r in rows)}
    for row in rows:
        prefix = f"n{row.size}"
        values[f"{prefix}_requests_per_min"] = row.per_minute
        values[f"{prefix}_worker_cpu_pct"] = row.worker_cpu
        values[f"{prefix}_beat_cpu_pct"] = row.beat_cpu
        values[f"{prefix}_redis_mib"] = row.redis_mib
        values[f"{prefix}_adopt_s"] = row.adopt_s
        values[f"{prefix}_naive_requests_per_min"] = row.size * 30
    if naive is not None:
        values["naive_measured_size"] = naive.size
        values["naive_measured_requests_per_min"] = naive.per_minute
        values["naive_measured_cpu_pct"] = naive.worker_cpu
    return values


# --- main -------------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x.replace("_", "")) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated payment counts") from None
    if not sizes or any(not 1 <= n <= 1_000_000 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be 1..1,000,000")
    return sizes


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(
        prog="python -m bench.steady",
        description="Steady state: Voltage requests/min, CPU and Redis memory for N pending.",
    )
    add = parser.add_argument
    add(
        "--sizes",
        type=parse_sizes,
        default=(1_000, 10_000, 100_000),
        help="default 1000,10000,100000",
    )
    add("--minutes", type=float, default=2.0, help="measured window per size (default 2)")
    add("--warmup", type=float, default=30.0, help="seconds after start before measuring")
    add("--expiration", type=int, default=86_400, help="of the seeded invoices (default 86400)")
    add(
        "--adopt",
        choices=("list", "watch"),
        default="list",
        help="list: store.adopt from list pages (default); watch: watch_existing per id",
    )
    add(
        "--first-poll-spread",
        type=float,
        default=None,
        metavar="SECONDS",
        help="spread the adopted payments' first scheduled read uniformly over this long "
        "(default: where the watcher's own poll policy puts it, as watch_existing does)",
    )
    add("--worker-concurrency", type=int, default=None, help="override the Procfile's")
    add("--no-naive", action="store_true", help="skip the measured naive row")
    add("--keep", action="store_true", help="keep the temp dir (logs)")
    add("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.warmup < 0 or not 60 <= args.expiration <= 30 * 86400:
        parser.error("need --minutes > 0, --warmup >= 0, --expiration 60..2592000")
    return Params(
        sizes=args.sizes,
        minutes=args.minutes,
        warmup=args.warmup,
        expiration=args.expiration,
        adopt=args.adopt,
        first_poll_spread=args.first_poll_spread,
        worker_concurrency=args.worker_concurrency,
        naive=not args.no_naive,
        keep=args.keep,
        json_path=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    exit_on_sigterm()
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="vw-steady-"))
    sim = Simulator(tmp)
    failed = True
    try:
        log(f"temp dir {tmp}; sizes {', '.join(f'{n:,}' for n in params.sizes)}")
        sim.start()
        settings = load_settings(**{k.lower(): v for k, v in watcher_values("", sim, tmp).items()})
        configure_logging(settings)
        rows = [measure_size(params, n, sim, tmp) for n in params.sizes]
        naive = None
        if params.naive:
            log(f"naive: {NAIVE_SIZE:,} payments, {params.minutes:g} min")
            naive = measure_naive(params, sim)
        print_report(params, rows, naive, load_before)
        if params.json_path is not None:
            write_json(params.json_path, headline(rows, naive))
        failed = False
        return 0
    finally:
        if failed:
            log_tails([sim.child])
        sim.stop()
        remove_or_keep(tmp, keep=params.keep, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
