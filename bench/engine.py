"""Engine numbers: polls per second per worker, Redis bytes per pending payment, dispatcher ticks.

Everything runs on loopback, in a temporary directory, on processes of its own: a redis-server
(store and Celery broker, as in production), the Voltage simulator as a separate process, and
(part 1 only) exactly one `celery -A watcher worker --pool threads --concurrency 8
-Q watcher.poll,watcher.control`. Three parts:

1. **polls/s**: N payments are made with `create_and_watch` (they stay `receiving`), all due at
   once. This process calls the production tick `watcher.tasks.dispatch_polls()` every
   `WATCHER_DISPATCH_INTERVAL` (1 s) until every payment has been polled once; the worker runs
   with `WATCHER_POLL_SCHEDULE=86400:3000`, so a polled payment's next poll lands 45-55 minutes
   later (the per-poll work is the same as with the default schedule) and "done" is exact: all
   N schedule scores are far in the future. Time = the first poll's start (the earliest
   `last_poll_at` of the N records) -> the moment the schedule shows all N done (read every
   5 ms). Next to it, against the same simulator, a plain `requests.Session` loop GETs the same
   N payments (1 thread), then 8 threads with a Session each. The simulator's per-payment GET
   counts (`GET /_sim/stats`) must show exactly one GET per payment and run. CPU per poll comes
   from /proc (worker and simulator process groups), `INFO cpu` and `INFO commandstats`.
2. **Redis bytes per pending payment**: on a fresh redis-server of its own, N pending payments
   are written exactly as `create_and_watch` writes them (the ADOPT script and the transitions
   list, checked field by field against `PaymentStore.adopt`), then given one poll's
   bookkeeping (`PaymentStore.record_poll`, as an unchanged poll does). Reported:
   (`used_memory` after - before) / N for both states, and where the bytes go.
3. **dispatcher tick**: a fresh database holds N pending payments (100k) whose next polls are
   spread as the production schedule spreads them (ages uniform over an hour, next poll
   uniform within the interval for that age). The production tick
   `watcher.tasks.dispatch_polls()` runs in this process with the default settings and really
   publishes its poll tasks to the Redis broker, once a second for K ticks: p50/p99/max ms
   and payments claimed. No worker runs; between ticks (untimed) this process reads the
   published ids back from the queue, checks them against what was claimed, and reschedules
   each with `PollPolicy.next_poll` as its poll would, so what falls due keeps flowing. Then
   a burst: B payments due at once, handed out by one tick with `WATCHER_DISPATCH_BATCH=B`, by
   the claim alone (no publishing), and by default ticks.

The redis-servers run without an append-only file (`RedisServer`'s default, as in the other
benchmarks), so no fsync cost is in these numbers; production runs AOF (`deploy/redis.conf`).

Nothing about timing is asserted; the exit status is 1 only when a count is off (a poll
missing or doubled, a plain GET failing, a record not as the watcher writes it, claimed ids
not published). `--json PATH` writes the headline numbers as one flat object.

Run (from the project root):

    .venv/bin/python -m bench.engine --quick      # 300 polls, 2k payments, 20k pending; ~30 s
    .venv/bin/python -m bench.engine              # 2000 polls, 10k payments, 100k pending; ~2 min
    .venv/bin/python -m bench.engine --parts tick --tick-pending 200000 --max-age 7200
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import redis
import requests

from bench.common import (
    Child,
    child_env,
    exit_on_sigterm,
    fmt,
    load_average,
    log,
    log_tails,
    machine_line,
    percentile,
    print_table,
    remove_or_keep,
    start_simulator,
    wait_for,
    write_json,
)
from bench.deliveries import group_cpu
from watcher.engine.records import PaymentRecord
from watcher.engine.store import PaymentStore, payment_fields
from watcher.engine.watching import create_and_watch
from watcher.logging import configure_logging
from watcher.lua import source
from watcher.redis_server import RedisServer, free_port
from watcher.runtime import Runtime, set_runtime
from watcher.settings import Settings, load_settings
from watcher.voltage.models import Payment

API_KEY = "bench-engine-sim-key-0123456789"
ORG_ID = "org-bench"
ENV_ID = "env-bench"
WALLET = "wallet-bench-engine"
POLL_QUEUE = "watcher.poll"  # the kombu list the poll tasks land in (watcher.celery.QUEUE_POLL)
PROBE_EVERY = 0.005  # seconds between the bench's reads while waiting
FAR_SCHEDULE = "86400:3000"  # part 1: the next poll after the measured one is 45-55 min away
FAR_THRESHOLD = 1000.0  # a score this far ahead means "polled" (a lease is 30 s)
TEMPLATES = 100  # real simulator answers the bulk writer clones
SELF_CHECKS = 20  # templates checked field by field against PaymentStore.adopt
FILL_PIPELINE = 500  # payments per pipeline round trip when filling
PARTS = ("polls", "memory", "tick")
JSON_KEYS = (
    "polls_per_s_worker",
    "polls_per_s_plain_1",
    "polls_per_s_plain_8",
    "redis_bytes_per_pending_payment",
    "tick_pending",
    "tick_ms_p50",
    "tick_ms_p99",
    "tick_ms_max",
    "tick_claimed_mean",
    "burst_due",
    "burst_claim_ms",
)


# --- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    quick: bool
    parts: tuple[str, ...]
    polls: int
    concurrency: int
    create_threads: int
    memory_payments: int
    tick_pending: int
    ticks: int
    burst: int
    max_age: float
    seed: int
    deadline: float
    json_path: Path | None
    keep: bool


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description="Engine numbers: polls/s per worker, Redis bytes per pending payment, "
        "dispatcher tick time with many pending payments.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="300 polls, 2k payments, 20k pending, 10 ticks"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    parser.add_argument("--polls", type=int, default=None, help="part 1 N (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads and plain")
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--memory-payments", type=int, default=None, help="part 2 (10000)")
    parser.add_argument("--tick-pending", type=int, default=None, help="part 3 (100000)")
    parser.add_argument("--ticks", type=int, default=None, help="measured ticks (30)")
    parser.add_argument("--burst", type=int, default=None, help="burst due at once (10000)")
    parser.add_argument(
        "--max-age",
        type=float,
        default=3600.0,
        help="part 3: pending payments' ages are uniform over [0, this] seconds",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=None, help="seconds per wait")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or any(p not in PARTS for p in parts):
        parser.error(f"--parts takes a subset of {','.join(PARTS)}")
    quick = args.quick
    polls = args.polls or (300 if quick else 2000)
    memory = args.memory_payments or (2000 if quick else 10_000)
    pending = args.tick_pending or (20_000 if quick else 100_000)
    ticks = args.ticks or (10 if quick else 30)
    burst = args.burst or (5000 if quick else 10_000)
    if min(polls, memory, pending, ticks, burst, args.concurrency, args.create_threads) < 1:
        parser.error("counts must be positive")
    if burst > pending:
        parser.error("--burst cannot exceed --tick-pending")
    if burst > 100_000:
        parser.error("--burst is at most 100000 (the WATCHER_DISPATCH_BATCH limit)")
    if args.max_age <= 0:
        parser.error("--max-age must be positive")
    return Params(
        quick=quick,
        parts=parts,
        polls=polls,
        concurrency=args.concurrency,
        create_threads=args.create_threads,
        memory_payments=memory,
        tick_pending=pending,
        ticks=ticks,
        burst=burst,
        max_age=args.max_age,
        seed=args.seed if args.seed is not None else random.randrange(1, 1_000_000),
        deadline=args.deadline or (60.0 + polls / 10),
        json_path=args.json_path,
        keep=args.keep,
    )


# --- the stack --------------------------------------------------------------------------------


def base_values(redis_url: str, voltage_url: str, data_dir: Path) -> dict[str, str]:
    """Settings every process of the bench shares (as environment variables)."""
    return {
        "WATCHER_REDIS_URL": redis_url,
        "VOLTAGE_API_URL": voltage_url,
        "VOLTAGE_API_KEY": API_KEY,
        "VOLTAGE_ORGANIZATION_ID": ORG_ID,
        "VOLTAGE_ENVIRONMENT_ID": ENV_ID,
        "VOLTAGE_WALLET_ID": WALLET,
        "WATCHER_DATA_DIR": str(data_dir),
        "WATCHER_LOG_FORMAT": "json",
        "WATCHER_LOG_LEVEL": "WARNING",
        "WATCHER_SWEEP_INTERVAL": "0",  # no beat runs anyway; say it for the worker too
    }


def settings_from(values: dict[str, str]) -> Settings:
    """Exactly these values over the defaults: a developer's `.env` is not read."""
    return load_settings(_env_file=None, **{k.lower(): v for k, v in values.items()})


def db_url(url: str, db: int) -> str:
    """The same server, another database (redis://host:port/N)."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


class Stack:
    """redis-server (store + broker), the simulator process and (part 1) one Celery worker."""

    def __init__(self, params: Params, tmp: Path) -> None:
        self.params = params
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis")
        self.memory_redis: RedisServer | None = None
        self.sim_port = 0
        self.simulator: Child | None = None
        self.worker: Child | None = None
        self.values: dict[str, str] = {}
        self.runtime: Runtime | None = None
        self.http = requests.Session()
        self.probes = 0  # Redis commands this process sent while waiting (left out of counts)

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    @property
    def sim_root(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def start(self) -> None:
        self.redis.start()
        self.sim_port = free_port()
        self.simulator = start_simulator(
            self.sim_port, API_KEY, generating_delay=0, cwd=self.tmp, http=self.http
        )
        data_dir = self.tmp / "data"
        data_dir.mkdir(exist_ok=True)
        self.values = base_values(self.redis.url, f"{self.sim_root}/v1", data_dir)
        # watcher.tasks (imported later) builds its Celery app, broker included, from the
        # environment at import: this process publishes the ticks' tasks to our Redis. The
        # shell's own WATCHER_/VOLTAGE_ settings must not reach the runs.
        for name in [k for k in os.environ if k.startswith(("WATCHER_", "VOLTAGE_"))]:
            del os.environ[name]
        os.environ.update(self.values)
        settings = settings_from(self.values)
        configure_logging(settings)
        self.runtime = Runtime.from_settings(settings)

    def start_worker(self) -> None:
        """Exactly one worker on the poll queue (and the control queue, for the readiness
        ping); its poll schedule puts a polled payment's next poll far away."""
        env = child_env({**self.values, "WATCHER_POLL_SCHEDULE": FAR_SCHEDULE})
        self.worker = Child(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "watcher",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(self.params.concurrency),
                "-Q",
                "watcher.poll,watcher.control",
                "--without-mingle",
                "--without-gossip",
                "-n",
                "bench-engine@%h",
            ],
            env,
            self.tmp,
        ).start()
        from watcher.celery import QUEUE_CONTROL
        from watcher.tasks import dispatch_polls

        # Readiness: a tick run by the worker (nothing is pending yet) bumps `dispatch_ticks`.
        before = self.rt.store.counters().get("dispatch_ticks", 0)
        dispatch_polls.apply_async(queue=QUEUE_CONTROL, expires=120)
        worker = self.worker
        wait_for(
            "the worker to run a ping tick",
            lambda: self.rt.store.counters().get("dispatch_ticks", 0) > before,
            timeout=90,
            children=[worker],
        )

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def stop_simulator(self) -> None:
        if self.simulator is not None:
            self.simulator.stop()

    def stop(self) -> None:
        self.stop_worker()
        self.stop_simulator()
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                self.runtime.redis.close()
        if self.memory_redis is not None:
            self.memory_redis.stop()
        self.redis.stop()
        self.http.close()

    def children(self) -> list[Child]:
        return [c for c in (self.simulator, self.worker) if c is not None]

    def sim_stats(self) -> dict[str, Any]:
        response = self.http.get(f"{self.sim_root}/_sim/stats", timeout=30)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def payment_url(self, payment_id: str) -> str:
        return (
            f"{self.sim_root}/v1/organizations/{ORG_ID}/environments/{ENV_ID}/payments/{payment_id}"
        )

    def snapshot(self) -> Snapshot:
        r = self.rt.redis
        cpu = r.info("cpu")
        raw = r.info("commandstats")
        self.probes += 2
        commands = {
            name.removeprefix("cmdstat_"): int(v.get("calls", 0))
            for name, v in raw.items()
            if isinstance(v, dict)
        }
        worker_process = self.worker.process if self.worker and self.worker.alive else None
        worker = worker_process.pid if worker_process is not None else None
        sim_process = self.simulator.process if self.simulator is not None else None
        sim = sim_process.pid if sim_process is not None else None
        return Snapshot(
            wall=time.perf_counter(),
            bench_cpu=time.process_time(),
            worker_cpu=group_cpu(worker),
            sim_cpu=group_cpu(sim),
            redis_cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            commands=sum(commands.values()),
            probes=self.probes,
        )


@dataclass(frozen=True)
class Snapshot:
    """Clocks and counters a run is measured with."""

    wall: float
    bench_cpu: float
    worker_cpu: float | None
    sim_cpu: float | None
    redis_cpu: float
    commands: int
    probes: int


def cpu_delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


# --- templates and the bulk writer ------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A real simulator answer for a fresh receive, as `create_and_watch` hands it to adopt."""

    payment: Payment
    fields: dict[str, str]  # payment_fields(payment): decoding the BOLT11 costs ~3 ms, once

    def clone_fields(self, payment_id: str) -> dict[str, str]:
        """The fields `payment_fields` gives for the same answer under another id."""
        raw = dict(self.payment.raw)
        raw["id"] = payment_id
        return {**self.fields, "raw": json.dumps(raw, separators=(",", ":"))}

    def clone(self, payment_id: str) -> Payment:
        return Payment.from_api({**self.payment.raw, "id": payment_id})


def make_templates(payments: Sequence[Payment]) -> list[Template]:
    return [Template(p, payment_fields(p)) for p in payments[:TEMPLATES]]


def queue_pending(
    pipe: redis.client.Pipeline,
    store: PaymentStore,
    payment_id: str,
    fields: dict[str, str],
    status: str,
    *,
    now: float,
    first_poll_at: float,
) -> None:
    """Queue on `pipe` exactly what `PaymentStore.adopt` writes for a pending payment given
    by `create_and_watch` (source "created", no client id): the ADOPT script, then the first
    transition. `self_check` compares the two field by field."""
    record = {
        "id": payment_id,
        "status": status,
        "version": "1",
        "source": "created",
        "watched_at": repr(now),
        "status_changed_at": repr(now),
        "poll_count": "0",
        "error_count": "0",
        **fields,
    }
    created = fields.get("created_at")
    created_at = datetime.fromisoformat(created).timestamp() if created else now
    args: list[str] = [
        payment_id,
        repr(now),
        repr(first_poll_at),
        "1",
        "",
        "",
        "",
        repr(created_at),
    ]
    for key, value in record.items():
        args.extend((key, value))
    keys = store.keys
    store.scripts.adopt(
        keys=[
            keys.payment(payment_id),
            keys.payments_index,
            keys.poll_schedule,
            keys.outbox,
            keys.pending_created,
        ],
        args=args,
        client=pipe,
    )
    pipe.rpush(
        keys.transitions(payment_id),
        json.dumps({"from": None, "to": status, "at": now, "event_id": None}),
    )


def fill_pending(
    store: PaymentStore,
    templates: Sequence[Template],
    n: int,
    *,
    watched_at: Callable[[int], float],
    first_poll_at: Callable[[int], float],
) -> tuple[list[str], list[dict[str, str]]]:
    """N pending payments, FILL_PIPELINE per round trip; returns their ids and fields. Raises
    if the ADOPT script did not create every one of them."""
    ids: list[str] = []
    all_fields: list[dict[str, str]] = []
    created = 0
    for start in range(0, n, FILL_PIPELINE):
        pipe = store.redis.pipeline(transaction=False)
        for i in range(start, min(n, start + FILL_PIPELINE)):
            template = templates[i % len(templates)]
            payment_id = str(uuid.uuid4())
            fields = template.clone_fields(payment_id)
            queue_pending(
                pipe,
                store,
                payment_id,
                fields,
                template.payment.status,
                now=watched_at(i),
                first_poll_at=first_poll_at(i),
            )
            ids.append(payment_id)
            all_fields.append(fields)
        results = pipe.execute()
        created += sum(1 for value in results[0::2] if value == 1)
    if created != n:
        raise RuntimeError(f"bulk fill created {created} of {n} payments")
    return ids, all_fields


def self_check(store: PaymentStore, templates: Sequence[Template]) -> list[str]:
    """For SELF_CHECKS templates: a clone written by `PaymentStore.adopt` (BOLT11 decoded
    again and all) and by the bulk writer must leave identical keys behind."""
    problems: list[str] = []
    keys = store.keys
    r = store.redis
    for template in templates[:SELF_CHECKS]:
        payment_id = str(uuid.uuid4())
        now = time.time()
        first = now + 0.5
        states = []
        for writer in ("adopt", "bulk"):
            if writer == "adopt":
                store.adopt(
                    template.clone(payment_id), source="created", now=now, first_poll_at=first
                )
            else:
                pipe = r.pipeline(transaction=False)
                queue_pending(
                    pipe,
                    store,
                    payment_id,
                    template.clone_fields(payment_id),
                    template.payment.status,
                    now=now,
                    first_poll_at=first,
                )
                pipe.execute()
            states.append(
                (
                    r.hgetall(keys.payment(payment_id)),
                    r.lrange(keys.transitions(payment_id), 0, -1),
                    r.zscore(keys.payments_index, payment_id),
                    r.zscore(keys.poll_schedule, payment_id),
                    r.zscore(keys.pending_created, payment_id),
                    r.exists(keys.outbox),
                )
            )
            r.delete(keys.payment(payment_id), keys.transitions(payment_id))
            r.zrem(keys.payments_index, payment_id)
            r.zrem(keys.poll_schedule, payment_id)
            r.zrem(keys.pending_created, payment_id)
        if states[0] != states[1]:
            problems.append(f"bulk writer differs from PaymentStore.adopt for {payment_id}")
    return problems


# --- part 1: polls per second -----------------------------------------------------------------


@dataclass
class Run:
    label: str
    kind: str  # watcher | plain
    n: int
    done: int
    seconds: float
    before: Snapshot
    after: Snapshot
    note: str = ""

    @property
    def rate(self) -> float | None:
        return self.done / self.seconds if self.seconds > 0 and self.done else None

    def per_item_ms(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.done else seconds * 1000 / self.done

    @property
    def worker_cpu(self) -> float | None:
        return cpu_delta(self.before.worker_cpu, self.after.worker_cpu)

    @property
    def sim_cpu(self) -> float | None:
        return cpu_delta(self.before.sim_cpu, self.after.sim_cpu)

    @property
    def wall(self) -> float:
        return self.after.wall - self.before.wall

    @property
    def commands(self) -> int:
        return (self.after.commands - self.before.commands) - (
            self.after.probes - self.before.probes
        )


@dataclass
class PollsResult:
    runs: list[Run]
    n: int
    created_seconds: float
    create_failures: int
    ticks: list[int]
    dispatch_to_first_poll: float | None
    polls_counter: int
    problems: list[str] = field(default_factory=list)
    templates: list[Payment] = field(default_factory=list)
    fields_ms: float | None = None  # CPU ms per payment_fields() call of an unchanged poll
    decode_ms: float | None = None  # CPU ms per BOLT11 decode (Payment.invoice())


def _unchanged_poll_fields(payment: Payment) -> dict[str, str]:
    return payment_fields(payment, decoded_request=payment.payment_request)


def fields_cost(payments: Sequence[Payment]) -> tuple[float | None, float | None]:
    """CPU ms per `payment_fields()` call as an unchanged poll makes it (the record already
    holds the invoice's fields, so no decode) and per BOLT11 decode alone (what a first poll
    or a new invoice costs), on the answers the worker polled; the best of three interleaved
    passes each, so other work on the machine weighs less."""
    sample = list(payments[:TEMPLATES])
    if not sample:
        return None, None
    best = {"fields": math.inf, "decode": math.inf}
    for _ in range(3):
        for name, call in (("fields", _unchanged_poll_fields), ("decode", Payment.invoice)):
            cpu = time.process_time()
            for payment in sample:
                call(payment)
            best[name] = min(best[name], (time.process_time() - cpu) * 1000 / len(sample))
    return best["fields"], best["decode"]


def create_payments(rt: Runtime, n: int, threads: int) -> tuple[list[str], list[Payment], int]:
    """N receives made and watched the production way; they stay `receiving` (1 h expiry)."""

    def one(i: int) -> tuple[str, Payment] | None:
        try:
            result = create_and_watch(
                rt,
                amount_msats=21_000 + i,
                description=f"Order {i:06d}",
                metadata={"order_id": f"order-{i:06d}"},
            )
        except Exception as exc:
            log(f"create {i} failed: {type(exc).__name__}: {exc}")
            return None
        raw = result.record.raw
        return (result.record.id, Payment.from_api(raw)) if raw else None

    with ThreadPoolExecutor(threads, thread_name_prefix="create") as pool:
        made = [m for m in pool.map(one, range(n)) if m is not None]
    return [m[0] for m in made], [m[1] for m in made], n - len(made)


def plain_gets(stack: Stack, ids: Sequence[str], threads: int, deadline: float) -> tuple[int, int]:
    """GET every payment once, `threads` threads with a Session each; returns (ok, errors).
    ok = a 200 whose JSON says `receiving` (the body is parsed, as the watcher parses it)."""
    slices = [list(ids[i::threads]) for i in range(threads)]
    tallies = [[0, 0] for _ in range(threads)]
    stop_at = time.monotonic() + deadline

    def work(part: list[str], tally: list[int]) -> None:
        with requests.Session() as session:
            for payment_id in part:
                if time.monotonic() > stop_at:
                    return
                try:
                    response = session.get(
                        stack.payment_url(payment_id),
                        headers={"x-api-key": API_KEY},
                        timeout=(3.05, 10),
                    )
                    ok = response.status_code == 200 and response.json()["status"] == "receiving"
                except (requests.RequestException, ValueError, KeyError):
                    ok = False
                tally[0 if ok else 1] += 1

    if threads == 1:
        work(slices[0], tallies[0])
    else:
        workers = [
            threading.Thread(target=work, args=(slices[i], tallies[i]), name=f"plain-{i}")
            for i in range(threads)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(max(1.0, stop_at - time.monotonic() + 15))
    return sum(t[0] for t in tallies), sum(t[1] for t in tallies)


def run_polls(stack: Stack, params: Params) -> PollsResult:
    """The worker, then the plain loops, over the same N payments; then the counts."""
    rt = stack.rt
    n = params.polls
    log("polls: starting the worker")
    stack.start_worker()
    log(f"polls: creating {n} payments with create_and_watch ({params.create_threads} threads)")
    began = time.perf_counter()
    ids, payments, failures = create_payments(rt, n, params.create_threads)
    created_seconds = time.perf_counter() - began
    result = PollsResult([], n, created_seconds, failures, [], None, 0, templates=payments)
    if failures:
        result.problems.append(f"{failures} of {n} creates failed")
    if not ids:
        return result
    baseline: dict[str, int] = stack.sim_stats()["per_payment"]
    records = watcher_run(stack, params, ids, result)
    stack.stop_worker()  # part 3 must not have a consumer on the poll queue
    for threads in dict.fromkeys((1, params.concurrency)):
        log(f"polls: plain requests loop, {threads} thread(s), {len(ids)} GETs")
        before = stack.snapshot()
        t0 = time.perf_counter()
        ok, errors = plain_gets(stack, ids, threads, params.deadline)
        seconds = time.perf_counter() - t0
        label = f"plain requests.Session loop, {threads} thread{'s' * (threads > 1)}"
        result.runs.append(Run(label, "plain", len(ids), ok, seconds, before, stack.snapshot()))
        if ok != len(ids):
            result.problems.append(f"{label}: {ok} of {len(ids)} GETs ok ({errors} errors)")
    check_polls(stack, ids, baseline, records, result)
    result.fields_ms, result.decode_ms = fields_cost(payments)
    return result


def watcher_run(
    stack: Stack, params: Params, ids: Sequence[str], result: PollsResult
) -> list[PaymentRecord | None]:
    """Tick from this process until the worker has polled every payment once."""
    from watcher.tasks import dispatch_polls

    rt = stack.rt
    store = rt.store
    schedule = store.keys.poll_schedule
    n = len(ids)

    def due() -> bool:
        stack.probes += 1
        return int(rt.redis.zcount(schedule, "-inf", time.time())) >= n

    wait_for("the new payments to come due", due, timeout=30, children=stack.children())
    polls_before = store.counters().get("polls", 0)
    set_runtime(rt)  # dispatch_polls() in this process uses our runtime
    interval = rt.settings.watcher_dispatch_interval
    log(f"polls: ticking dispatch_polls() every {interval:g}s until all {n} are polled")
    before = stack.snapshot()
    dispatch_began = time.time()
    stop_at = time.monotonic() + params.deadline
    next_tick = time.monotonic()
    done_at: float | None = None
    try:
        while time.monotonic() < stop_at:
            if time.monotonic() >= next_tick:
                result.ticks.append(dispatch_polls())
                next_tick += interval
            stack.probes += 1
            if int(rt.redis.zcount(schedule, time.time() + FAR_THRESHOLD, "+inf")) >= n:
                done_at = time.time()
                break
            for child in stack.children():
                if not child.alive:
                    raise RuntimeError(f"{child.name} exited during the run:\n{child.tail()}")
            time.sleep(PROBE_EVERY)
        after = stack.snapshot()
    finally:
        set_runtime(None)
    if done_at is None:
        result.problems.append(f"watcher: not every payment was polled in {params.deadline:.0f}s")
        done_at = time.time()
    records = store.get_many(ids)
    starts = [r.last_poll_at for r in records if r is not None and r.last_poll_at is not None]
    first_poll = min(starts) if starts else dispatch_began
    result.dispatch_to_first_poll = first_poll - dispatch_began if starts else None
    result.polls_counter = store.counters().get("polls", 0) - polls_before
    label = f"watcher: 1 worker, threads x{params.concurrency}"
    seconds = done_at - first_poll
    result.runs.append(Run(label, "watcher", n, len(starts), seconds, before, after))
    return records


def check_polls(
    stack: Stack,
    ids: Sequence[str],
    baseline: dict[str, int],
    records: Sequence[PaymentRecord | None],
    result: PollsResult,
) -> None:
    """Exactly one GET per payment and run (the simulator's own counts), one poll each."""
    per_payment: dict[str, int] = stack.sim_stats()["per_payment"]
    runs = len(result.runs)
    off = [pid for pid in ids if per_payment.get(pid, 0) - baseline.get(pid, 0) != runs]
    if off:
        sample = ", ".join(
            f"{pid[:8]}: +{per_payment.get(pid, 0) - baseline.get(pid, 0)}" for pid in off[:5]
        )
        result.problems.append(f"{len(off)} payments did not get exactly {runs} GETs ({sample})")
    if result.polls_counter != len(ids):
        result.problems.append(
            f"watcher: `polls` counter rose by {result.polls_counter}, not {len(ids)}"
        )
    bad = [r for r in records if r is None or r.poll_count != 1 or r.status != "receiving"]
    if bad:
        result.problems.append(f"watcher: {len(bad)} records without exactly one poll")


# --- part 2: Redis memory per pending payment -------------------------------------------------


@dataclass
class MemoryResult:
    n: int
    bytes_adopted: float
    bytes_polled: float
    parts: list[tuple[str, float, str]]  # label, bytes per payment, note
    record_fields: int
    record_payload: int
    record_encoding: str
    record_listpack: int | None
    record_without_raw: int | None
    biggest_fields: list[tuple[str, int]]
    fill_seconds: float
    problems: list[str] = field(default_factory=list)


def used_memory(client: redis.Redis) -> int:
    """`used_memory` on a new connection: a pipeline's query buffer, still held by the
    connection that sent it, would otherwise count as data."""
    client.connection_pool.disconnect()
    return int(client.info("memory")["used_memory"])


def memory_usage(client: redis.Redis, key: str) -> int:
    return int(cast(int, client.memory_usage(key, samples=0)) or 0)


def run_memory(stack: Stack, params: Params, templates: Sequence[Template]) -> MemoryResult:
    """On a redis-server of its own: used_memory before and after N pending payments."""
    n = params.memory_payments
    server = RedisServer(stack.tmp / "redis-memory")
    stack.memory_redis = server
    server.start()
    values = base_values(server.url, f"{stack.sim_root}/v1", stack.tmp / "data")
    rt = Runtime.from_settings(settings_from(values))
    store, r = rt.store, rt.redis
    try:
        r.script_load(
            source("adopt")
        )  # the script cache belongs to the baseline, not to the payments
        r.ping()
        before = used_memory(r)
        now = time.time()
        log(f"memory: writing {n} pending payments on a fresh redis-server ({server.url})")
        began = time.perf_counter()
        ids, fields = fill_pending(
            store,
            templates,
            n,
            watched_at=lambda _i: now,
            first_poll_at=lambda _i: now + rt.settings.watcher_generating_poll_interval,
        )
        fill_seconds = time.perf_counter() - began
        adopted = used_memory(r)
        log("memory: one unchanged poll's bookkeeping for each (PaymentStore.record_poll)")
        for payment_id, payment in zip(ids, fields, strict=True):
            store.record_poll(payment_id, now=time.time(), fields=payment)
        polled = used_memory(r)

        keys = store.keys
        sample = ids[:: max(1, n // 200)]
        record_key = keys.payment(sample[0])
        record = cast(dict[str, str], r.hgetall(record_key))
        hash_bytes = sum(memory_usage(r, keys.payment(i)) for i in sample) / len(sample)
        list_bytes = sum(memory_usage(r, keys.transitions(i)) for i in sample) / len(sample)
        index_bytes = memory_usage(r, keys.payments_index) / n
        schedule_bytes = memory_usage(r, keys.poll_schedule) / n
        listpack, without_raw = hash_variants(r, record)
        per = (polled - before) / n
        known = hash_bytes + list_bytes + index_bytes + schedule_bytes
        parts = [
            (
                "record hash",
                hash_bytes,
                f"MEMORY USAGE, mean of {len(sample)}; {len(record)} fields, encoding "
                f"{r.object('encoding', record_key)}",
            ),
            ("transitions list (one entry)", list_bytes, f"MEMORY USAGE, mean of {len(sample)}"),
            ("payments index (zset) entry", index_bytes, "MEMORY USAGE / N"),
            ("poll schedule (zset) entry", schedule_bytes, "MEMORY USAGE / N"),
            (
                "the rest",
                per - known,
                "keyspace and hash tables, allocator rounding (fixed part shrinks as N grows)",
            ),
        ]
        biggest = sorted(((k, len(k) + len(v)) for k, v in record.items()), key=lambda x: -x[1])
        problems = []
        if int(r.zcard(keys.poll_schedule)) != n or int(r.zcard(keys.payments_index)) != n:
            problems.append("memory: schedule or index does not hold every payment")
        return MemoryResult(
            n=n,
            bytes_adopted=(adopted - before) / n,
            bytes_polled=per,
            parts=parts,
            record_fields=len(record),
            record_payload=sum(len(k) + len(v) for k, v in record.items()),
            record_encoding=str(r.object("encoding", record_key)),
            record_listpack=listpack,
            record_without_raw=without_raw,
            biggest_fields=biggest[:4],
            fill_seconds=fill_seconds,
            problems=problems,
        )
    finally:
        r.close()
        server.stop()
        stack.memory_redis = None


def hash_variants(r: redis.Redis, record: dict[str, str]) -> tuple[int | None, int | None]:
    """What one record would take as a listpack (values up to 1024 bytes allowed), and as
    today's encoding without its `raw` copy of the Voltage answer. Scratch keys, removed."""
    scratch = "bench:scratch"
    try:
        limit = r.config_get("hash-max-listpack-value").get("hash-max-listpack-value")
        r.config_set("hash-max-listpack-value", 1024)
        r.hset(scratch, mapping=cast(Any, record))
        listpack = memory_usage(r, scratch) if r.object("encoding", scratch) == "listpack" else None
        r.delete(scratch)
        if limit is not None:
            r.config_set("hash-max-listpack-value", limit)
        r.hset(scratch, mapping=cast(Any, {k: v for k, v in record.items() if k != "raw"}))
        without_raw = memory_usage(r, scratch)
    except redis.RedisError:
        return None, None
    finally:
        r.delete(scratch)
    return listpack, without_raw


# --- part 3: the dispatcher tick --------------------------------------------------------------


@dataclass
class Tick:
    ms: float
    cpu_ms: float
    claimed: int
    redis_ms: float = 0.0
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (calls, usec)


@dataclass
class TickResult:
    pending: int
    max_age: float
    demand_per_s: float
    cap_per_s: float
    fill_seconds: float
    rescore_seconds: float
    burst: int
    chunk: int
    settings: str  # the tick's settings, as printed
    warmup: Tick = field(default_factory=lambda: Tick(0.0, 0.0, 0))
    ticks: list[Tick] = field(default_factory=list)
    backlog_after: int = 0
    commands_per_tick: list[tuple[str, float, float]] = field(default_factory=list)
    burst_tick: Tick = field(default_factory=lambda: Tick(0.0, 0.0, 0))
    claim_only: Tick = field(default_factory=lambda: Tick(0.0, 0.0, 0))
    default_ticks: list[Tick] = field(default_factory=list)
    empty_ticks: list[Tick] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def claimed_mean(self) -> float:
        return sum(t.claimed for t in self.ticks) / len(self.ticks) if self.ticks else 0.0


# Run only inside the dispatcher's claim_due script: their time is already in EVALSHA's.
INSIDE_CLAIM = frozenset({"zadd", "zrangebyscore"})


def timed(call: Callable[[], int], client: redis.Redis) -> Tick:
    """Wall and CPU time of one call, and what it cost Redis (commandstats around it)."""
    stats = commandstats(client)
    cpu = time.process_time()
    began = time.perf_counter()
    claimed = call()
    wall = time.perf_counter() - began
    cpu_ms = (time.process_time() - cpu) * 1000
    after = commandstats(client)
    commands = {}
    for name, (calls, usec) in after.items():
        calls0, usec0 = stats.get(name, (0, 0))
        if calls > calls0 and name != "info":
            commands[name] = (calls - calls0, usec - usec0)
    redis_usec = sum(u for name, (_, u) in commands.items() if name not in INSIDE_CLAIM)
    return Tick(wall * 1000, cpu_ms, claimed, redis_usec / 1000, commands)


def published_ids(broker: redis.Redis) -> list[str]:
    """Every payment id in the poll tasks waiting in the broker (kombu's JSON envelope,
    base64 body: [args, kwargs, embed]); the queue is emptied."""
    ids: list[str] = []
    for raw in cast(list[str], broker.lrange(POLL_QUEUE, 0, -1)):
        message = json.loads(raw)
        body: str | bytes = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if message.get("headers", {}).get("task") == "watcher.poll_payments":
            ids.extend(json.loads(body)[0][0])
    broker.delete(POLL_QUEUE)
    return ids


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    raw = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v.get("calls", 0)), int(v.get("usec", 0)))
        for name, v in raw.items()
        if isinstance(v, dict)
    }


def run_ticks(stack: Stack, params: Params, templates: Sequence[Template]) -> TickResult:
    """Fill a fresh database, tick in real time, then the burst rows."""
    # A fresh database of the same server: the broker stays in database 0, as configured.
    settings = settings_from({**stack.values, "WATCHER_REDIS_URL": db_url(stack.redis.url, 1)})
    bench = TickBench(Runtime.from_settings(settings), stack.rt.redis, params)
    try:
        if int(bench.rt.redis.dbsize()) != 0:
            raise RuntimeError("database 1 is not empty")
        result = bench.fill(templates)
        bench.steady(result)
        bench.bursts(result)
        result.problems = bench.problems
        return result
    finally:
        set_runtime(None)
        with contextlib.suppress(redis.RedisError):
            bench.rt.redis.flushdb()
        bench.rt.redis.close()


class TickBench:
    """Part 3's steps over one runtime (store in database 1) and the broker (database 0)."""

    def __init__(self, rt: Runtime, broker: redis.Redis, params: Params) -> None:
        self.rt = rt
        self.store = rt.store
        self.broker = broker
        self.params = params
        self.rng = random.Random(params.seed)
        self.ids: list[str] = []
        self.watched_at: dict[str, float] = {}
        self.problems: list[str] = []

    def tick(self) -> Tick:
        """One production tick (`watcher.tasks.dispatch_polls`, run here), timed."""
        from watcher.tasks import dispatch_polls

        return timed(dispatch_polls, self.broker)

    def published(
        self, claimed: int, what: str, expected: Sequence[str] | None = None
    ) -> list[str]:
        """Every claimed id must be in the broker's poll queue exactly once."""
        got = published_ids(self.broker)
        wrong = len(got) != claimed or len(set(got)) != len(got)
        if expected is not None:
            wrong = wrong or sorted(got) != sorted(expected)
        if wrong:
            self.problems.append(f"{what}: claimed {claimed}, published {len(got)} ids")
        return got

    def polled(self, ids: Sequence[str]) -> None:
        """Stand in for the workers (outside the timed tick): each claimed payment gets the
        next poll PollPolicy gives it, so what falls due keeps flowing as in production."""
        now = time.time()
        policy = self.rt.policy
        scores = [
            policy.next_poll(
                PaymentRecord(
                    id=pid,
                    status="receiving",
                    version=1,
                    source="created",
                    watched_at=self.watched_at[pid],
                ),
                now,
            )
            for pid in ids
        ]
        rescore(self.store, ids, scores)

    def fill(self, templates: Sequence[Template]) -> TickResult:
        params = self.params
        n = params.tick_pending
        now = time.time()
        ages = [self.rng.uniform(0.0, params.max_age) for _ in range(n)]
        log(f"tick: writing {n} pending payments (ages uniform over {params.max_age:g}s)")
        began = time.perf_counter()
        self.ids, _ = fill_pending(
            self.store,
            templates,
            n,
            watched_at=lambda i: now - ages[i],
            first_poll_at=lambda _i: now + 10 * 86400.0,  # the real spread is set next
        )
        fill_seconds = time.perf_counter() - began
        # Steady state: a payment of age a is polled every interval(a) (the production
        # PollPolicy), so its next poll is uniform within that interval from now.
        intervals = [
            self.rt.policy.interval(
                PaymentRecord(
                    id=pid, status="receiving", version=1, source="created", watched_at=now - age
                ),
                now,
            )
            for pid, age in zip(self.ids, ages, strict=True)
        ]
        self.watched_at = {pid: now - age for pid, age in zip(self.ids, ages, strict=True)}
        residuals = [self.rng.uniform(0.0, i) for i in intervals]
        began = time.perf_counter()
        base = time.time()
        rescore(self.store, self.ids, [base + x for x in residuals])
        s = self.rt.settings
        return TickResult(
            pending=n,
            max_age=params.max_age,
            demand_per_s=sum(1.0 / i for i in intervals),
            cap_per_s=s.watcher_dispatch_batch / s.watcher_dispatch_interval,
            fill_seconds=fill_seconds,
            rescore_seconds=time.perf_counter() - began,
            burst=params.burst,
            chunk=s.watcher_poll_chunk,
            settings=(
                f"WATCHER_DISPATCH_BATCH={s.watcher_dispatch_batch}, "
                f"WATCHER_POLL_CHUNK={s.watcher_poll_chunk}, "
                f"WATCHER_CLAIM_LEASE={s.watcher_claim_lease:g}, "
                f"WATCHER_DISPATCH_INTERVAL={s.watcher_dispatch_interval:g} (lookahead "
                f"{s.watcher_dispatch_interval / 2:g} s), poll schedule "
                + ",".join(f"{a:g}:{b:g}" for a, b in s.watcher_poll_schedule)
            ),
        )

    def steady(self, result: TickResult) -> None:
        """A warm-up tick, then K ticks one interval apart, as beat would send them."""
        set_runtime(self.rt)
        self.broker.delete(POLL_QUEUE)
        interval = self.rt.settings.watcher_dispatch_interval
        log(f"tick: 1 warm-up tick, then {self.params.ticks} ticks {interval:g}s apart")
        result.warmup = self.tick()
        self.polled(self.published(result.warmup.claimed, "warm-up tick"))
        calls: dict[str, list[int]] = {}
        start = time.monotonic() + interval
        for k in range(self.params.ticks):
            while (wait := start + k * interval - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
            tick = self.tick()
            result.ticks.append(tick)
            for name, (n, usec) in tick.commands.items():
                total = calls.setdefault(name, [0, 0])
                total[0] += n
                total[1] += usec
            self.polled(self.published(tick.claimed, f"steady tick {k + 1}"))
        result.backlog_after = int(
            self.rt.redis.zcount(self.store.keys.poll_schedule, "-inf", time.time())
        )
        k = len(result.ticks)
        result.commands_per_tick = sorted(
            ((name, n / k, usec / k) for name, (n, usec) in calls.items()), key=lambda x: -x[2]
        )

    def arm_burst(self, burst_ids: Sequence[str]) -> None:
        """Everything due in 10-60 minutes, except `burst_ids`: due now."""
        t = time.time()
        rescore(self.store, self.ids, [t + 600 + self.rng.uniform(0, 3000) for _ in self.ids])
        rescore(self.store, burst_ids, [t - self.rng.uniform(0, 1) for _ in burst_ids])

    def bursts(self, result: TickResult) -> None:
        from watcher.engine.dispatcher import dispatch_due_polls

        b = self.params.burst
        s = self.rt.settings
        log(f"tick: burst of {b} due at once")
        burst_ids = self.rng.sample(self.ids, b)

        self.arm_burst(burst_ids)
        wide = s.model_copy(update={"watcher_dispatch_batch": b})
        set_runtime(dataclasses.replace(self.rt, settings=wide))
        result.burst_tick = self.tick()
        self.published(result.burst_tick.claimed, "burst tick", burst_ids)
        set_runtime(self.rt)

        self.arm_burst(burst_ids)
        result.claim_only = timed(
            lambda: dispatch_due_polls(
                self.store,
                now=time.time(),
                lease=s.watcher_claim_lease,
                lookahead=s.watcher_dispatch_interval / 2,
                max_items=b,
                chunk_size=s.watcher_poll_chunk,
                send=lambda _ids: None,
            ),
            self.broker,
        )
        if result.claim_only.claimed != b:
            self.problems.append(f"claim-only run claimed {result.claim_only.claimed} of {b}")

        self.arm_burst(burst_ids)
        for _ in range(math.ceil(b / s.watcher_dispatch_batch) + 1):
            tick = self.tick()
            if not tick.claimed:
                break
            result.default_ticks.append(tick)
        drained = sum(t.claimed for t in result.default_ticks)
        self.published(drained, "default ticks on the burst", burst_ids)
        result.empty_ticks = [self.tick() for _ in range(5)]
        if any(t.claimed for t in result.empty_ticks):
            self.problems.append("a tick with nothing due claimed something")
        self.broker.delete(POLL_QUEUE)


def rescore(store: PaymentStore, ids: Sequence[str], scores: Sequence[float]) -> None:
    """Set next-poll times in bulk (ZADD XX: only members still scheduled)."""
    key = store.keys.poll_schedule
    step = 5000
    for start in range(0, len(ids), step):
        mapping = dict(zip(ids[start : start + step], scores[start : start + step], strict=True))
        store.redis.zadd(key, cast(Any, mapping), xx=True)


# --- report -----------------------------------------------------------------------------------


def report_polls(params: Params, result: PollsResult) -> None:
    runs = result.runs
    watcher = next((r for r in runs if r.kind == "watcher"), None)
    plains = [r for r in runs if r.kind == "plain"]
    print(
        f"Part 1: payment polls per second (N={result.n} pending payments, each GET once per run; "
        f"created with create_and_watch in {result.created_seconds:.1f}s)"
    )
    print(
        "  watcher: exactly one `celery -A watcher worker --pool threads --concurrency "
        f"{params.concurrency} -Q watcher.poll,watcher.control`; dispatch = this process calls "
        "watcher.tasks.dispatch_polls() (the production tick: claim with lease, publish chunks) "
        "every 1 s; worker WATCHER_POLL_SCHEDULE="
        f"{FAR_SCHEDULE} so each payment is polled exactly once"
    )
    print(
        "  time: watcher = first poll's start (min last_poll_at) -> all N rescheduled (schedule "
        f"read every {PROBE_EVERY * 1000:g} ms); plain = loop start -> end. Simulator: separate "
        "process (uvicorn, one event loop)"
    )
    print()
    rows = []
    for run in runs:
        nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        bench_cpu = run.after.bench_cpu - run.before.bench_cpu
        redis_cpu = run.after.redis_cpu - run.before.redis_cpu
        worker_cpu = (run.worker_cpu or 0.0) if run.kind == "watcher" else 0.0
        sim_cpu = run.sim_cpu or 0.0
        rows.append(
            [
                run.label,
                f"{run.done}/{run.n}",
                fmt(run.seconds, 2),
                fmt(run.rate),
                fmt(run.rate / plains[0].rate, 2)
                if run.rate and plains and plains[0].rate
                else "-",
                fmt(run.rate / plains[-1].rate, 2)
                if run.rate and plains and plains[-1].rate
                else "-",
                fmt(run.per_item_ms(run.worker_cpu), 3) if run.kind == "watcher" else "-",
                fmt(run.per_item_ms(run.sim_cpu), 3),
                fmt(100 * run.sim_cpu / run.wall if run.sim_cpu is not None else None),
                fmt(run.per_item_ms(redis_cpu), 3),
                fmt(run.per_item_ms(bench_cpu), 3),
                fmt(run.commands / run.done if run.done else None, 1),
                fmt(100 * (worker_cpu + sim_cpu + redis_cpu + bench_cpu) / (run.wall * nproc)),
            ]
        )
    print_table(
        "  runs (CPU ms per poll/GET; bench = this process: the plain loop, or the dispatch "
        "ticks + waiting)",
        [
            "run",
            "done",
            "seconds",
            "polls/s",
            "vs plain 1",
            f"vs plain {params.concurrency}",
            "worker CPU",
            "simulator CPU",
            "sim busy %",
            "redis CPU",
            "bench CPU",
            "Redis cmds/poll",
            f"% of {len(os.sched_getaffinity(0))} CPUs",
        ],
        rows,
    )
    if watcher is not None and watcher.rate:
        best = max((p.rate or 0.0) for p in plains) if plains else 0.0
        sim_note = (
            "the simulator answered faster for a plain loop than the watcher asked, so it was "
            "not the watcher's bottleneck"
            if best > watcher.rate
            else "the plain loops were no faster than the watcher: the simulator (or the "
            "machine) may be the limit here"
        )
        print(
            f"  ticks: {len(result.ticks)} (claimed {', '.join(str(t) for t in result.ticks)}); "
            f"first poll {fmt((result.dispatch_to_first_poll or 0) * 1000)} ms after the first "
            f"tick began; `polls` counter +{result.polls_counter}; {sim_note}"
        )
        worker_ms = watcher.per_item_ms(watcher.worker_cpu)
        if result.fields_ms is not None and worker_ms:
            print(
                f"  an unchanged poll's payment_fields() (the invoice is not decoded again): "
                f"{result.fields_ms:.2f} ms CPU, {100 * result.fields_ms / worker_ms:.0f}% of "
                f"the worker's {worker_ms:.2f} ms per poll; one BOLT11 decode (a first poll, a "
                f"new invoice): {result.decode_ms or 0:.2f} ms"
            )
    print()


def report_memory(result: MemoryResult) -> None:
    print(
        f"Part 2: Redis memory per pending payment (N={result.n}, fresh redis-server, "
        "used_memory from INFO memory; written as create_and_watch writes them, verified "
        f"against PaymentStore.adopt; {result.fill_seconds:.1f}s to write)"
    )
    print(f"  just adopted (hash, transitions, index, schedule): {result.bytes_adopted:,.0f} B")
    print(
        f"  after one unchanged poll (record_poll adds last_poll_at, error_streak, ...): "
        f"{result.bytes_polled:,.0f} B   <- headline"
    )
    rows = [[label, fmt(value), note] for label, value, note in result.parts]
    print_table("  where the bytes go (after the poll)", ["part", "bytes", "how"], rows)
    fields = ", ".join(f"{k} {v:,}" for k, v in result.biggest_fields)
    print(
        f"  the record: {result.record_fields} fields, {result.record_payload:,} bytes of "
        f"field names + values (biggest: {fields}), encoding {result.record_encoding}"
    )
    if result.record_listpack is not None:
        print(
            f"  the same record as a listpack (hash-max-listpack-value 1024): "
            f"{result.record_listpack:,} B; without its `raw` field (today's encoding): "
            f"{result.record_without_raw or 0:,} B"
        )
    print()


def report_ticks(result: TickResult) -> None:
    print(
        f"Part 3: dispatcher tick with {result.pending:,} pending payments (fresh database; "
        f"ages uniform over {result.max_age:g}s, next poll uniform within the production "
        f"schedule's interval for that age; written in {result.fill_seconds:.1f}s + "
        f"{result.rescore_seconds:.1f}s)"
    )
    print(
        f"  tick = watcher.tasks.dispatch_polls() in this process, default settings "
        f"({result.settings}), publishing real watcher.poll_payments tasks to the Redis "
        "broker; no worker runs: after each tick (untimed) this process reads the published "
        "ids back from the queue and reschedules each with PollPolicy.next_poll, as its poll "
        "would, so the due flow stays steady"
    )
    print(
        f"  due by the schedule's arithmetic: {result.demand_per_s:,.0f} polls/s; the "
        f"dispatcher hands out at most {result.cap_per_s:,.0f}/s (WATCHER_DISPATCH_BATCH / "
        f"WATCHER_DISPATCH_INTERVAL); due and unclaimed after the run: "
        f"{result.backlog_after:,}"
    )
    print()

    def row(label: str, ticks: Sequence[Tick]) -> list[str]:
        wall = [t.ms for t in ticks]
        return [
            label,
            str(len(ticks)),
            fmt(percentile(wall, 50), 1),
            fmt(percentile(wall, 99), 1),
            fmt(max(wall) if wall else None, 1),
            fmt(percentile([t.cpu_ms for t in ticks], 50), 1),
            fmt(percentile([t.redis_ms for t in ticks], 50), 1),
            fmt(sum(t.claimed for t in ticks) / len(ticks) if ticks else None, 0),
        ]

    rows = [
        row(f"steady, 1 tick/s ({result.pending:,} pending)", result.ticks),
        row("warm-up tick (not in the steady rows)", [result.warmup]),
        row(
            f"burst: {result.burst:,} due, one tick with batch {result.burst:,}",
            [result.burst_tick],
        ),
        row(f"burst: claim only, no publishing ({result.burst:,})", [result.claim_only]),
        row("burst: default ticks until drained", result.default_ticks),
        row("nothing due", result.empty_ticks),
    ]
    print_table(
        "  ticks (ms wall; CPU = this process; Redis = commandstats usec, the claim script "
        "counted whole; wall - CPU - Redis = waiting: round trips, other processes; "
        "nearest-rank percentiles: under 100 ticks, p99 is the max)",
        ["", "ticks", "p50 ms", "p99 ms", "max ms", "p50 CPU ms", "p50 Redis ms", "claimed/tick"],
        rows,
    )
    drain = len(result.default_ticks)
    print(
        f"  a burst of {result.burst:,} takes {drain} default ticks, so the last of it is handed "
        f"out about {max(0, drain - 1)} s after the first (1 tick/s)"
    )
    top = ", ".join(
        f"{name} {calls:.0f} ({usec / 1000:.1f} ms)"
        for name, calls, usec in result.commands_per_tick[:7]
    )
    print(f"  Redis per steady tick, calls (Redis-side time): {top}")
    claimed = result.claimed_mean
    if claimed:
        publish = result.burst_tick.ms - result.claim_only.ms
        print(
            f"  per claimed payment: claim {result.claim_only.ms * 1000 / result.burst:.1f} us, "
            f"claim + publish {result.burst_tick.ms * 1000 / result.burst:.1f} us "
            f"(publishing one {result.chunk}-id task: "
            f"{publish / max(1, math.ceil(result.burst / result.chunk)):.2f} ms)"
        )
    print()


def headline(
    polls: PollsResult | None, memory: MemoryResult | None, ticks: TickResult | None
) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = dict.fromkeys(JSON_KEYS)
    if polls is not None:
        watcher = [r for r in polls.runs if r.kind == "watcher"]
        plains = [r for r in polls.runs if r.kind == "plain"]
        out["polls_per_s_worker"] = (
            round(watcher[0].rate, 1) if watcher and watcher[0].rate else None
        )
        if plains:
            out["polls_per_s_plain_1"] = round(plains[0].rate or 0.0, 1) or None
            out["polls_per_s_plain_8"] = round(plains[-1].rate or 0.0, 1) or None
    if memory is not None:
        out["redis_bytes_per_pending_payment"] = round(memory.bytes_polled)
    if ticks is not None:
        wall = [t.ms for t in ticks.ticks]
        out["tick_pending"] = ticks.pending
        out["tick_ms_p50"] = round(percentile(wall, 50) or 0.0, 2)
        out["tick_ms_p99"] = round(percentile(wall, 99) or 0.0, 2)
        out["tick_ms_max"] = round(max(wall), 2)
        out["tick_claimed_mean"] = round(ticks.claimed_mean, 1)
        out["burst_due"] = ticks.burst
        out["burst_claim_ms"] = round(ticks.burst_tick.ms, 2)
    return out


# --- main -------------------------------------------------------------------------------------


@dataclass
class Results:
    polls: PollsResult | None = None
    memory: MemoryResult | None = None
    ticks: TickResult | None = None
    problems: list[str] = field(default_factory=list)


def run_parts(stack: Stack, params: Params) -> Results:
    results = Results()
    stack.start()
    if "polls" in params.parts:
        results.polls = run_polls(stack, params)
        results.problems += results.polls.problems
        answers = results.polls.templates
    else:
        log(f"creating {TEMPLATES} payments on the simulator as templates")
        _, answers, _ = create_payments(stack.rt, TEMPLATES, params.create_threads)
    stack.stop_worker()
    stack.stop_simulator()
    templates = make_templates(answers)
    if not templates:
        raise RuntimeError("no payment could be created on the simulator")
    scratch = Runtime.from_settings(
        settings_from({**stack.values, "WATCHER_REDIS_URL": db_url(stack.redis.url, 2)})
    )
    try:
        results.problems += self_check(scratch.store, templates)
    finally:
        scratch.redis.flushdb()
        scratch.redis.close()
    if "memory" in params.parts:
        results.memory = run_memory(stack, params, templates)
        results.problems += results.memory.problems
    if "tick" in params.parts:
        results.ticks = run_ticks(stack, params, templates)
        results.problems += results.ticks.problems
    return results


def report(
    stack: Stack, params: Params, results: Results, load_before: str, started: float
) -> None:
    print()
    print("=== voltage-watcher engine benchmark ===")
    version = str(stack.rt.redis.info("server").get("redis_version", "?"))
    print(machine_line(version, load_before))
    print(f"mode: {'quick' if params.quick else 'full'}, seed {params.seed}")
    print()
    if results.polls is not None:
        report_polls(params, results.polls)
    if results.memory is not None:
        report_memory(results.memory)
    if results.ticks is not None:
        report_ticks(results.ticks)
    numbers = headline(results.polls, results.memory, results.ticks)
    print("Headline: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
    if params.json_path is not None:
        write_json(params.json_path, numbers)
        print(f"wrote {params.json_path}")
    for problem in results.problems:
        print(f"PROBLEM: {problem}")
    if not results.problems:
        print(
            "checks: every count as expected (one GET per payment and run, one poll per "
            "record, records as PaymentStore.adopt writes them, every claimed id published once)"
        )
    print(f"total wall time: {time.time() - started:.1f}s")


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    exit_on_sigterm()
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-engine-"))
    stack = Stack(params, tmp)
    started = time.time()
    failed = True
    try:
        log(f"temp dir {tmp}; starting redis-server and the simulator")
        results = run_parts(stack, params)
        report(stack, params, results, load_before, started)
        failed = False
        return 1 if results.problems else 0
    finally:
        if failed:
            log_tails(stack.children())
        stack.stop()
        remove_or_keep(tmp, keep=params.keep, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
