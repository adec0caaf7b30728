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

import base64
import contextlib
import dataclasses
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis
import requests

from bench.harness import (
    API_KEY,
    Run,
    Stack,
    check_alive,
    db_url,
    finish,
    fmt,
    header,
    log,
    options,
    parser,
    percentile,
    plain_loop,
    print_table,
    run_in_stack,
    usable_cpus,
    wait_for,
)
from watcher.engine.record_fields import payment_fields
from watcher.engine.records import PaymentRecord
from watcher.engine.store import PaymentStore
from watcher.engine.watching import create_and_watch
from watcher.lua import source
from watcher.runtime import Runtime, set_runtime
from watcher.voltage.models import Payment

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
    "polls_per_s_worker", "polls_per_s_plain_1", "polls_per_s_plain_8",
    "redis_bytes_per_pending_payment", "tick_pending", "tick_ms_p50", "tick_ms_p99", "tick_ms_max",
    "tick_claimed_mean", "burst_due", "burst_claim_ms",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> Any:
    p = parser(
        "bench.engine",
        "Engine numbers: polls/s per worker, Redis bytes per pending payment, dispatcher tick "
        "time with many pending payments.",
        "300 polls, 2k payments, 20k pending, 10 ticks",
    )
    options(
        p,
        ("--parts", str, ",".join(PARTS), "comma-separated subset"),
        ("--polls", int, None, "part 1 N (default 2000)"),
        ("--concurrency", int, 8, "worker threads and plain"),
        ("--create-threads", int, 8, None),
        ("--memory-payments", int, None, "part 2 (10000)"),
        ("--tick-pending", int, None, "part 3 (100000)"),
        ("--ticks", int, None, "measured ticks (30)"),
        ("--burst", int, None, "burst due at once (10000)"),
        ("--max-age", float, 3600.0, "part 3: pending payments' ages are uniform over [0, this] s"),
        ("--seed", int, None, None),
        ("--deadline", float, None, "seconds per wait"),
    )
    a = p.parse_args(argv)
    a.parts = tuple(x.strip() for x in a.parts.split(",") if x.strip())
    if not a.parts or any(x not in PARTS for x in a.parts):
        p.error(f"--parts takes a subset of {','.join(PARTS)}")
    a.polls = a.polls or (300 if a.quick else 2000)
    a.memory_payments = a.memory_payments or (2000 if a.quick else 10_000)
    a.tick_pending = a.tick_pending or (20_000 if a.quick else 100_000)
    a.ticks = a.ticks or (10 if a.quick else 30)
    a.burst = a.burst or (5000 if a.quick else 10_000)
    counts = (a.polls, a.memory_payments, a.tick_pending, a.ticks, a.burst, a.concurrency)
    if min(*counts, a.create_threads) < 1:
        p.error("counts must be positive")
    if a.burst > a.tick_pending:
        p.error("--burst cannot exceed --tick-pending")
    if a.burst > 100_000:
        p.error("--burst is at most 100000 (the WATCHER_DISPATCH_BATCH limit)")
    if a.max_age <= 0:
        p.error("--max-age must be positive")
    a.seed = a.seed if a.seed is not None else random.randrange(1, 1_000_000)
    a.deadline = a.deadline or (60.0 + a.polls / 10)
    return a


# --- templates and the bulk writer ------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A real simulator answer for a fresh receive, as `create_and_watch` hands it to adopt."""

    payment: Payment
    fields: dict[str, str]  # payment_fields(payment): decoding the BOLT11 costs ~3 ms, once

    def clone_fields(self, payment_id: str) -> dict[str, str]:
        """The fields `payment_fields` gives for the same answer under another id."""
        raw = {**self.payment.raw, "id": payment_id}
        return {**self.fields, "raw": json.dumps(raw, separators=(",", ":"))}


def queue_pending(
    pipe: Any, store: PaymentStore, pid: str, fields: dict[str, str], status: str, *,
    now: float, first_poll_at: float,
) -> None:  # fmt: skip
    """Queue on `pipe` exactly what `PaymentStore.adopt` writes for a pending payment given
    by `create_and_watch` (source "created", no client id): the ADOPT script, then the first
    transition. `self_check` compares the two field by field."""
    record = {"id": pid, "status": status, "version": "1", "source": "created",
              "watched_at": repr(now), "status_changed_at": repr(now), "poll_count": "0",
              "error_count": "0", **fields}  # fmt: skip
    created = fields.get("created_at")
    created_at = datetime.fromisoformat(created).timestamp() if created else now
    args = [pid, repr(now), repr(first_poll_at), "1", "", "", "", repr(created_at)]
    args += [x for pair in record.items() for x in pair]
    k = store.keys
    keys = [k.payment(pid), k.payments_index, k.poll_schedule, k.outbox, k.pending_created]
    store.scripts.adopt(keys=keys, args=args, client=pipe)
    transition = {"from": None, "to": status, "at": now, "event_id": None}
    pipe.rpush(k.transitions(pid), json.dumps(transition))


def fill_pending(
    store: PaymentStore, templates: Sequence[Template], n: int, *,
    watched_at: Callable[[int], float], first_poll_at: Callable[[int], float],
) -> tuple[list[str], list[dict[str, str]]]:  # fmt: skip
    """N pending payments, FILL_PIPELINE per round trip; returns their ids and fields. Raises
    if the ADOPT script did not create every one of them."""
    ids: list[str] = []
    all_fields: list[dict[str, str]] = []
    created = 0
    for start in range(0, n, FILL_PIPELINE):
        pipe = store.redis.pipeline(transaction=False)
        for i in range(start, min(n, start + FILL_PIPELINE)):
            template, pid = templates[i % len(templates)], str(uuid.uuid4())
            fields = template.clone_fields(pid)
            queue_pending(pipe, store, pid, fields, template.payment.status,
                          now=watched_at(i), first_poll_at=first_poll_at(i))  # fmt: skip
            ids.append(pid)
            all_fields.append(fields)
        created += sum(1 for value in pipe.execute()[0::2] if value == 1)
    if created != n:
        raise RuntimeError(f"bulk fill created {created} of {n} payments")
    return ids, all_fields


def self_check(store: PaymentStore, templates: Sequence[Template]) -> list[str]:
    """For SELF_CHECKS templates: a clone written by `PaymentStore.adopt` (BOLT11 decoded
    again and all) and by the bulk writer must leave identical keys behind."""
    problems: list[str] = []
    k, r = store.keys, store.redis
    for template in templates[:SELF_CHECKS]:
        pid, now = str(uuid.uuid4()), time.time()
        states = []
        for writer in ("adopt", "bulk"):
            if writer == "adopt":
                clone = Payment.from_api({**template.payment.raw, "id": pid})
                store.adopt(clone, source="created", now=now, first_poll_at=now + 0.5)
            else:
                pipe = r.pipeline(transaction=False)
                fields, status = template.clone_fields(pid), template.payment.status
                queue_pending(pipe, store, pid, fields, status, now=now, first_poll_at=now + 0.5)
                pipe.execute()
            zsets = (k.payments_index, k.poll_schedule, k.pending_created)
            states.append((r.hgetall(k.payment(pid)), r.lrange(k.transitions(pid), 0, -1),
                           *(r.zscore(z, pid) for z in zsets), r.exists(k.outbox)))  # fmt: skip
            r.delete(k.payment(pid), k.transitions(pid))
            for z in zsets:
                r.zrem(z, pid)
        if states[0] != states[1]:
            problems.append(f"bulk writer differs from PaymentStore.adopt for {pid}")
    return problems


# --- part 1: polls per second -----------------------------------------------------------------


@dataclass
class PollsResult:
    n: int
    created_seconds: float
    templates: list[Payment]
    runs: list[Run] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    dispatch_to_first_poll: float | None = None
    polls_counter: int = 0
    problems: list[str] = field(default_factory=list)
    fields_ms: float | None = None  # CPU ms per payment_fields() call of an unchanged poll
    decode_ms: float | None = None  # CPU ms per BOLT11 decode (Payment.invoice())


def fields_cost(payments: Sequence[Payment]) -> tuple[float | None, float | None]:
    """CPU ms per `payment_fields()` call as an unchanged poll makes it (the record already
    holds the invoice's fields, so no decode) and per BOLT11 decode alone (what a first poll
    or a new invoice costs); the best of three interleaved passes each."""
    sample = list(payments[:TEMPLATES])
    if not sample:
        return None, None
    calls: dict[str, Callable[[Payment], object]] = {
        "fields": lambda p: payment_fields(p, decoded_request=p.payment_request),
        "decode": Payment.invoice,
    }
    best = dict.fromkeys(calls, math.inf)
    for _ in range(3):
        for name, call in calls.items():
            cpu = time.process_time()
            for payment in sample:
                call(payment)
            best[name] = min(best[name], (time.process_time() - cpu) * 1000 / len(sample))
    return best["fields"], best["decode"]


def create_payments(rt: Runtime, n: int, threads: int) -> tuple[list[str], list[Payment], int]:
    """N receives made and watched the production way; they stay `receiving` (1 h expiry)."""

    def one(i: int) -> tuple[str, Payment] | None:
        try:
            made = create_and_watch(rt, amount_msats=21_000 + i, description=f"Order {i:06d}",
                                    metadata={"order_id": f"order-{i:06d}"})  # fmt: skip
        except Exception as exc:
            log(f"create {i} failed: {type(exc).__name__}: {exc}")
            return None
        raw = made.record.raw
        return (made.record.id, Payment.from_api(raw)) if raw else None

    with ThreadPoolExecutor(threads, thread_name_prefix="create") as pool:
        made = [m for m in pool.map(one, range(n)) if m is not None]
    return [m[0] for m in made], [m[1] for m in made], n - len(made)


def snapshot(stack: Stack, rt: Runtime) -> Any:
    worker = next((c for c in stack.children if c.name == "worker"), None)
    simulator = next(c for c in stack.children if c.name == "simulator")
    return stack.usage(rt.redis, worker=worker, simulator=simulator)


def run_polls(stack: Stack, rt: Runtime, values: dict[str, str], a: Any) -> PollsResult:
    """The worker, then the plain loops, over the same N payments; then the counts."""
    n = a.polls
    log("polls: starting the worker")
    values = {**values, "WATCHER_POLL_SCHEDULE": FAR_SCHEDULE}
    queues = ["-Q", "watcher.poll,watcher.control", "--without-mingle", "--without-gossip"]
    pool = ["--pool", "threads", "--concurrency", str(a.concurrency), *queues]
    stack.worker("worker", values, *pool, "-n", "bench-engine@%h", rt=rt)
    log(f"polls: creating {n} payments with create_and_watch ({a.create_threads} threads)")
    began = time.perf_counter()
    ids, payments, failures = create_payments(rt, n, a.create_threads)
    result = PollsResult(n, time.perf_counter() - began, payments)
    if failures:
        result.problems.append(f"{failures} of {n} creates failed")
    if not ids:
        return result
    baseline: dict[str, int] = stack.sim("GET", "/stats")["per_payment"]
    records = watcher_run(stack, rt, a, ids, result)
    stack.stop_children("worker")  # part 3 must not have a consumer on the poll queue

    def get(session: requests.Session, pid: str) -> bool:
        answer = session.get(f"{stack.payments_url}/{pid}", headers={"x-api-key": API_KEY},
                             timeout=(3.05, 10))  # fmt: skip
        return answer.status_code == 200 and answer.json()["status"] == "receiving"

    for threads in dict.fromkeys((1, a.concurrency)):
        log(f"polls: plain requests loop, {threads} thread(s), {len(ids)} GETs")
        before, t0 = snapshot(stack, rt), time.perf_counter()
        ok, errors = plain_loop(ids, threads, get, a.deadline)
        seconds = time.perf_counter() - t0
        label = f"plain requests.Session loop, {threads} thread{'s' * (threads > 1)}"
        delta = before.to(snapshot(stack, rt))
        result.runs.append(Run(label, "plain", len(ids), ok, seconds, delta))
        if ok != len(ids):
            result.problems.append(f"{label}: {ok} of {len(ids)} GETs ok ({errors} errors)")
    check_polls(stack, ids, baseline, records, result)
    result.fields_ms, result.decode_ms = fields_cost(payments)
    return result


def watcher_run(
    stack: Stack, rt: Runtime, a: Any, ids: Sequence[str], result: PollsResult
) -> list[PaymentRecord | None]:
    """Tick from this process until the worker has polled every payment once."""
    from watcher.tasks import dispatch_polls

    store, schedule, n = rt.store, rt.store.keys.poll_schedule, len(ids)

    def count(low: float | str, high: float | str) -> int:
        stack.own["zcount"] += 1
        return int(rt.redis.zcount(schedule, low, high))

    wait_for("the new payments to come due", lambda: count("-inf", time.time()) >= n, 30,
             stack.children)  # fmt: skip
    polls_before = store.counters().get("polls", 0)
    set_runtime(rt)  # dispatch_polls() in this process uses our runtime
    interval = rt.settings.watcher_dispatch_interval
    log(f"polls: ticking dispatch_polls() every {interval:g}s until all {n} are polled")
    before, dispatch_began = snapshot(stack, rt), time.time()
    stop_at = next_tick = time.monotonic()
    stop_at += a.deadline
    done_at: float | None = None
    try:
        while time.monotonic() < stop_at:
            if time.monotonic() >= next_tick:
                result.ticks.append(dispatch_polls())
                next_tick += interval
            if count(time.time() + FAR_THRESHOLD, "+inf") >= n:
                done_at = time.time()
                break
            check_alive(stack.children)
            time.sleep(PROBE_EVERY)
        after = snapshot(stack, rt)
    finally:
        set_runtime(None)
    if done_at is None:
        result.problems.append(f"watcher: not every payment was polled in {a.deadline:.0f}s")
        done_at = time.time()
    records = store.get_many(ids)
    starts = [r.last_poll_at for r in records if r is not None and r.last_poll_at is not None]
    first_poll = min(starts) if starts else dispatch_began
    result.dispatch_to_first_poll = first_poll - dispatch_began if starts else None
    result.polls_counter = store.counters().get("polls", 0) - polls_before
    label = f"watcher: 1 worker, threads x{a.concurrency}"
    delta = before.to(after)
    result.runs.append(Run(label, "watcher", n, len(starts), done_at - first_poll, delta))
    return records


def check_polls(
    stack: Stack, ids: Sequence[str], baseline: dict[str, int],
    records: Sequence[PaymentRecord | None], result: PollsResult,
) -> None:  # fmt: skip
    """Exactly one GET per payment and run (the simulator's own counts), one poll each."""
    got: dict[str, int] = stack.sim("GET", "/stats")["per_payment"]
    runs = len(result.runs)
    off = [pid for pid in ids if got.get(pid, 0) - baseline.get(pid, 0) != runs]
    if off:
        shown = ", ".join(f"{p[:8]}: +{got.get(p, 0) - baseline.get(p, 0)}" for p in off[:5])
        result.problems.append(f"{len(off)} payments did not get exactly {runs} GETs ({shown})")
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
    record: dict[str, str]
    record_encoding: str
    record_listpack: int | None
    record_without_raw: int | None
    fill_seconds: float
    problems: list[str]


def used_memory(client: redis.Redis) -> int:
    """`used_memory` on a new connection: a pipeline's query buffer, still held by the
    connection that sent it, would otherwise count as data."""
    client.connection_pool.disconnect()
    return int(client.info("memory")["used_memory"])


def memory_usage(client: redis.Redis, key: str) -> int:
    return int(cast(int, client.memory_usage(key, samples=0)) or 0)


def run_memory(stack: Stack, values: dict[str, str], a: Any, templates: Sequence[Template]) -> Any:
    """On a redis-server of its own: used_memory before and after N pending payments."""
    n = a.memory_payments
    server = stack.new_redis("redis-memory")
    rt = stack.runtime({**values, "WATCHER_REDIS_URL": server.url})
    store, r = rt.store, rt.redis
    r.script_load(source("adopt"))  # the script cache belongs to the baseline, not the payments
    r.ping()
    before, now = used_memory(r), time.time()
    log(f"memory: writing {n} pending payments on a fresh redis-server ({server.url})")
    began = time.perf_counter()
    first = now + rt.settings.watcher_generating_poll_interval
    ids, fields = fill_pending(store, templates, n, watched_at=lambda _i: now,
                               first_poll_at=lambda _i: first)  # fmt: skip
    fill_seconds, adopted = time.perf_counter() - began, used_memory(r)
    log("memory: one unchanged poll's bookkeeping for each (PaymentStore.record_poll)")
    for pid, payment in zip(ids, fields, strict=True):
        store.record_poll(pid, now=time.time(), fields=payment)
    polled = used_memory(r)
    k = store.keys
    sample = ids[:: max(1, n // 200)]
    record_key = k.payment(sample[0])
    record = cast(dict[str, str], r.hgetall(record_key))
    encoding = str(r.object("encoding", record_key))
    mean = len(sample)
    hash_bytes = sum(memory_usage(r, k.payment(i)) for i in sample) / mean
    list_bytes = sum(memory_usage(r, k.transitions(i)) for i in sample) / mean
    index_bytes = memory_usage(r, k.payments_index) / n
    schedule_bytes = memory_usage(r, k.poll_schedule) / n
    listpack, without_raw = hash_variants(r, record)
    each = (polled - before) / n
    rest = each - hash_bytes - list_bytes - index_bytes - schedule_bytes
    parts = [
        ("record hash", hash_bytes,
         f"MEMORY USAGE, mean of {mean}; {len(record)} fields, encoding {encoding}"),
        ("transitions list (one entry)", list_bytes, f"MEMORY USAGE, mean of {mean}"),
        ("payments index (zset) entry", index_bytes, "MEMORY USAGE / N"),
        ("poll schedule (zset) entry", schedule_bytes, "MEMORY USAGE / N"),
        ("the rest", rest,
         "keyspace and hash tables, allocator rounding (fixed part shrinks as N grows)"),
    ]  # fmt: skip
    problems = []
    if int(r.zcard(k.poll_schedule)) != n or int(r.zcard(k.payments_index)) != n:
        problems.append("memory: schedule or index does not hold every payment")
    return MemoryResult(n, (adopted - before) / n, each, parts, record, encoding, listpack,
                        without_raw, fill_seconds, problems)  # fmt: skip


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


def no_tick() -> Tick:
    return Tick(0.0, 0.0, 0)


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
    warmup: Tick = field(default_factory=no_tick)
    ticks: list[Tick] = field(default_factory=list)
    backlog_after: int = 0
    commands_per_tick: list[tuple[str, float, float]] = field(default_factory=list)
    burst_tick: Tick = field(default_factory=no_tick)
    claim_only: Tick = field(default_factory=no_tick)
    default_ticks: list[Tick] = field(default_factory=list)
    empty_ticks: list[Tick] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def claimed_mean(self) -> float:
        return sum(t.claimed for t in self.ticks) / len(self.ticks) if self.ticks else 0.0


# Run only inside the dispatcher's claim_due script: their time is already in EVALSHA's.
INSIDE_CLAIM = frozenset({"zadd", "zrangebyscore"})


def timed(stack: Stack, call: Callable[[], int], client: redis.Redis) -> Tick:
    """Wall and CPU time of one call, and what it cost Redis (commandstats around it)."""
    before = stack.usage(client)
    cpu, began = time.process_time(), time.perf_counter()
    claimed = call()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    delta = before.to(stack.usage(client))
    commands = {k: v for k, v in delta.commands.items() if k != "info"}
    redis_usec = sum(u for name, (_, u) in commands.items() if name not in INSIDE_CLAIM)
    return Tick(wall * 1000, cpu * 1000, claimed, redis_usec / 1000, commands)


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


def rescore(store: PaymentStore, ids: Sequence[str], scores: Sequence[float]) -> None:
    """Set next-poll times in bulk (ZADD XX: only members still scheduled)."""
    for i in range(0, len(ids), 5000):
        mapping = dict(zip(ids[i : i + 5000], scores[i : i + 5000], strict=True))
        store.redis.zadd(store.keys.poll_schedule, cast(Any, mapping), xx=True)


class TickBench:
    """Part 3's steps over one runtime (store in database 1) and the broker (database 0)."""

    def __init__(self, stack: Stack, rt: Runtime, broker: redis.Redis, a: Any) -> None:
        self.stack, self.rt, self.store, self.broker, self.a = stack, rt, rt.store, broker, a
        self.rng = random.Random(a.seed)
        self.ids: list[str] = []
        self.watched_at: dict[str, float] = {}
        self.problems: list[str] = []

    def tick(self) -> Tick:
        """One production tick (`watcher.tasks.dispatch_polls`, run here), timed."""
        from watcher.tasks import dispatch_polls

        return timed(self.stack, dispatch_polls, self.broker)

    def published(self, claimed: int, what: str, expected: Sequence[str] = ()) -> list[str]:
        """Every claimed id must be in the broker's poll queue exactly once."""
        got = published_ids(self.broker)
        wrong = len(got) != claimed or len(set(got)) != len(got)
        if wrong or (expected and sorted(got) != sorted(expected)):
            self.problems.append(f"{what}: claimed {claimed}, published {len(got)} ids")
        return got

    def record(self, pid: str, watched_at: float) -> PaymentRecord:
        return PaymentRecord(id=pid, status="receiving", version=1, source="created",
                             watched_at=watched_at)  # fmt: skip

    def polled(self, ids: Sequence[str]) -> None:
        """Stand in for the workers (outside the timed tick): each claimed payment gets the
        next poll PollPolicy gives it, so what falls due keeps flowing as in production."""
        now, policy = time.time(), self.rt.policy
        scores = [policy.next_poll(self.record(pid, self.watched_at[pid]), now) for pid in ids]
        rescore(self.store, ids, scores)

    def fill(self, templates: Sequence[Template]) -> TickResult:
        a, n, now = self.a, self.a.tick_pending, time.time()
        ages = [self.rng.uniform(0.0, a.max_age) for _ in range(n)]
        log(f"tick: writing {n} pending payments (ages uniform over {a.max_age:g}s)")
        began = time.perf_counter()
        self.ids, _ = fill_pending(self.store, templates, n, watched_at=lambda i: now - ages[i],
                                   first_poll_at=lambda _i: now + 10 * 86400.0)  # fmt: skip
        fill_seconds = time.perf_counter() - began
        # Steady state: a payment of age a is polled every interval(a) (the production
        # PollPolicy), so its next poll is uniform within that interval from now.
        self.watched_at = {pid: now - age for pid, age in zip(self.ids, ages, strict=True)}
        policy = self.rt.policy
        intervals = [policy.interval(self.record(p, w), now) for p, w in self.watched_at.items()]
        residuals = [self.rng.uniform(0.0, i) for i in intervals]
        began, base = time.perf_counter(), time.time()
        rescore(self.store, self.ids, [base + x for x in residuals])
        s = self.rt.settings
        shown = (
            f"WATCHER_DISPATCH_BATCH={s.watcher_dispatch_batch}, "
            f"WATCHER_POLL_CHUNK={s.watcher_poll_chunk}, "
            f"WATCHER_CLAIM_LEASE={s.watcher_claim_lease:g}, "
            f"WATCHER_DISPATCH_INTERVAL={s.watcher_dispatch_interval:g} (lookahead "
            f"{s.watcher_dispatch_interval / 2:g} s), poll schedule "
            + ",".join(f"{x:g}:{y:g}" for x, y in s.watcher_poll_schedule)
        )
        cap = s.watcher_dispatch_batch / s.watcher_dispatch_interval
        rescored = time.perf_counter() - began
        demand = sum(1.0 / i for i in intervals)
        return TickResult(n, a.max_age, demand, cap, fill_seconds, rescored, a.burst,
                          s.watcher_poll_chunk, shown)  # fmt: skip

    def steady(self, result: TickResult) -> None:
        """A warm-up tick, then K ticks one interval apart, as beat would send them."""
        set_runtime(self.rt)
        self.broker.delete(POLL_QUEUE)
        interval = self.rt.settings.watcher_dispatch_interval
        log(f"tick: 1 warm-up tick, then {self.a.ticks} ticks {interval:g}s apart")
        result.warmup = self.tick()
        self.polled(self.published(result.warmup.claimed, "warm-up tick"))
        calls: dict[str, list[int]] = {}
        start = time.monotonic() + interval
        for k in range(self.a.ticks):
            while (wait := start + k * interval - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
            tick = self.tick()
            result.ticks.append(tick)
            for name, (n, usec) in tick.commands.items():
                total = calls.setdefault(name, [0, 0])
                total[0], total[1] = total[0] + n, total[1] + usec
            self.polled(self.published(tick.claimed, f"steady tick {k + 1}"))
        schedule = self.store.keys.poll_schedule
        result.backlog_after = int(self.rt.redis.zcount(schedule, "-inf", time.time()))
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

        b, s = self.a.burst, self.rt.settings
        log(f"tick: burst of {b} due at once")
        burst_ids = self.rng.sample(self.ids, b)
        self.arm_burst(burst_ids)
        wide = s.model_copy(update={"watcher_dispatch_batch": b})
        set_runtime(dataclasses.replace(self.rt, settings=wide))
        result.burst_tick = self.tick()
        self.published(result.burst_tick.claimed, "burst tick", burst_ids)
        set_runtime(self.rt)
        self.arm_burst(burst_ids)
        lookahead = s.watcher_dispatch_interval / 2
        result.claim_only = timed(self.stack, lambda: dispatch_due_polls(
            self.store, now=time.time(), lease=s.watcher_claim_lease, lookahead=lookahead,
            max_items=b, chunk_size=s.watcher_poll_chunk, send=lambda _ids: None,
        ), self.broker)  # fmt: skip
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


def run_ticks(stack: Stack, values: dict[str, str], rt0: Runtime, a: Any,
              templates: Sequence[Template]) -> TickResult:  # fmt: skip
    """Fill a fresh database, tick in real time, then the burst rows."""
    # A fresh database of the same server: the broker stays in database 0, as configured.
    rt = stack.runtime({**values, "WATCHER_REDIS_URL": db_url(stack.redis.url, 1)})
    bench = TickBench(stack, rt, rt0.redis, a)
    try:
        if int(rt.redis.dbsize()) != 0:
            raise RuntimeError("database 1 is not empty")
        result = bench.fill(templates)
        bench.steady(result)
        bench.bursts(result)
        result.problems = bench.problems
        return result
    finally:
        set_runtime(None)
        with contextlib.suppress(redis.RedisError):
            rt.redis.flushdb()


# --- report -----------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return fmt(a / b, 2) if a and b else "-"


def report_polls(a: Any, result: PollsResult) -> None:
    runs = result.runs
    watcher = next((r for r in runs if r.kind == "watcher"), None)
    plains = [r for r in runs if r.kind == "plain"]
    print(
        f"Part 1: payment polls per second (N={result.n} pending payments, each GET once per run; "
        f"created with create_and_watch in {result.created_seconds:.1f}s)\n"
        "  watcher: exactly one `celery -A watcher worker --pool threads --concurrency "
        f"{a.concurrency} -Q watcher.poll,watcher.control`; dispatch = this process calls "
        "watcher.tasks.dispatch_polls() (the production tick: claim with lease, publish chunks) "
        f"every 1 s; worker WATCHER_POLL_SCHEDULE={FAR_SCHEDULE} so each payment is polled "
        "exactly once\n  time: watcher = first poll's start (min last_poll_at) -> all N "
        f"rescheduled (schedule read every {PROBE_EVERY * 1000:g} ms); plain = loop start -> "
        "end. Simulator: separate process (uvicorn, one event loop)\n"
    )
    rows = []
    for run in runs:
        d = run.delta
        worker = (d.groups.get("worker") or 0.0) if run.kind == "watcher" else 0.0
        sim = d.groups.get("simulator")
        one, many = (plains[0].rate, plains[-1].rate) if plains else (None, None)
        rows.append([
            run.label, f"{run.done}/{run.n}", fmt(run.seconds, 2), fmt(run.rate),
            ratio(run.rate, one), ratio(run.rate, many),
            fmt(run.ms(d.groups.get("worker")), 3) if run.kind == "watcher" else "-",
            fmt(run.ms(sim), 3), fmt(100 * sim / d.wall if sim is not None else None),
            fmt(run.ms(d.redis), 3), fmt(run.ms(d.bench), 3),
            fmt(d.total_commands / run.done if run.done else None, 1),
            fmt(100 * (worker + (sim or 0.0) + d.redis + d.bench) / (d.wall * usable_cpus())),
        ])  # fmt: skip
    heads = "run|done|seconds|polls/s|vs plain 1|vs plain {c}|worker CPU|simulator CPU|sim busy %"
    heads += "|redis CPU|bench CPU|Redis cmds/poll|% of {n} CPUs"
    print_table(
        "  runs (CPU ms per poll/GET; bench = this process: the plain loop, or the dispatch "
        "ticks + waiting)",
        heads.format(c=a.concurrency, n=usable_cpus()).split("|"),
        rows,
    )
    if watcher is None or not watcher.rate:
        print()
        return
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
    worker_ms = watcher.ms(watcher.delta.groups.get("worker"))
    if result.fields_ms is not None and worker_ms:
        print(
            f"  an unchanged poll's payment_fields() (the invoice is not decoded again): "
            f"{result.fields_ms:.2f} ms CPU, {100 * result.fields_ms / worker_ms:.0f}% of "
            f"the worker's {worker_ms:.2f} ms per poll; one BOLT11 decode (a first poll, a "
            f"new invoice): {result.decode_ms or 0:.2f} ms"
        )
    print()


def report_memory(m: MemoryResult) -> None:
    print(
        f"Part 2: Redis memory per pending payment (N={m.n}, fresh redis-server, used_memory "
        "from INFO memory; written as create_and_watch writes them, verified against "
        f"PaymentStore.adopt; {m.fill_seconds:.1f}s to write)\n"
        f"  just adopted (hash, transitions, index, schedule): {m.bytes_adopted:,.0f} B\n"
        f"  after one unchanged poll (record_poll adds last_poll_at, error_streak, ...): "
        f"{m.bytes_polled:,.0f} B   <- headline"
    )
    rows = [[label, fmt(value), note] for label, value, note in m.parts]
    print_table("  where the bytes go (after the poll)", ["part", "bytes", "how"], rows)
    sizes = sorted(((k, len(k) + len(v)) for k, v in m.record.items()), key=lambda x: -x[1])
    print(
        f"  the record: {len(m.record)} fields, {sum(s for _, s in sizes):,} bytes of field "
        f"names + values (biggest: {', '.join(f'{k} {v:,}' for k, v in sizes[:4])}), "
        f"encoding {m.record_encoding}"
    )
    if m.record_listpack is not None:
        print(
            f"  the same record as a listpack (hash-max-listpack-value 1024): "
            f"{m.record_listpack:,} B; without its `raw` field (today's encoding): "
            f"{m.record_without_raw or 0:,} B"
        )
    print()


def tick_row(label: str, ticks: Sequence[Tick]) -> list[str]:
    wall = [t.ms for t in ticks]
    return [
        label, str(len(ticks)), fmt(percentile(wall, 50), 1), fmt(percentile(wall, 99), 1),
        fmt(max(wall) if wall else None, 1), fmt(percentile([t.cpu_ms for t in ticks], 50), 1),
        fmt(percentile([t.redis_ms for t in ticks], 50), 1),
        fmt(sum(t.claimed for t in ticks) / len(ticks) if ticks else None, 0),
    ]  # fmt: skip


def report_ticks(t: TickResult) -> None:
    print(
        f"Part 3: dispatcher tick with {t.pending:,} pending payments (fresh database; ages "
        f"uniform over {t.max_age:g}s, next poll uniform within the production schedule's "
        f"interval for that age; written in {t.fill_seconds:.1f}s + {t.rescore_seconds:.1f}s)\n"
        f"  tick = watcher.tasks.dispatch_polls() in this process, default settings "
        f"({t.settings}), publishing real watcher.poll_payments tasks to the Redis broker; no "
        "worker runs: after each tick (untimed) this process reads the published ids back from "
        "the queue and reschedules each with PollPolicy.next_poll, as its poll would, so the "
        f"due flow stays steady\n  due by the schedule's arithmetic: {t.demand_per_s:,.0f} "
        f"polls/s; the dispatcher hands out at most {t.cap_per_s:,.0f}/s "
        "(WATCHER_DISPATCH_BATCH / WATCHER_DISPATCH_INTERVAL); due and unclaimed after the run: "
        f"{t.backlog_after:,}\n"
    )
    b = f"{t.burst:,}"
    rows = [
        tick_row(f"steady, 1 tick/s ({t.pending:,} pending)", t.ticks),
        tick_row("warm-up tick (not in the steady rows)", [t.warmup]),
        tick_row(f"burst: {b} due, one tick with batch {b}", [t.burst_tick]),
        tick_row(f"burst: claim only, no publishing ({b})", [t.claim_only]),
        tick_row("burst: default ticks until drained", t.default_ticks),
        tick_row("nothing due", t.empty_ticks),
    ]
    print_table(
        "  ticks (ms wall; CPU = this process; Redis = commandstats usec, the claim script "
        "counted whole; wall - CPU - Redis = waiting: round trips, other processes; "
        "nearest-rank percentiles: under 100 ticks, p99 is the max)",
        ["", "ticks", "p50 ms", "p99 ms", "max ms", "p50 CPU ms", "p50 Redis ms", "claimed/tick"],
        rows,
    )
    drain = len(t.default_ticks)
    print(
        f"  a burst of {b} takes {drain} default ticks, so the last of it is handed out about "
        f"{max(0, drain - 1)} s after the first (1 tick/s)"
    )
    top = [f"{name} {n:.0f} ({usec / 1000:.1f} ms)" for name, n, usec in t.commands_per_tick[:7]]
    print(f"  Redis per steady tick, calls (Redis-side time): {', '.join(top)}")
    if t.claimed_mean:
        publish = t.burst_tick.ms - t.claim_only.ms
        print(
            f"  per claimed payment: claim {t.claim_only.ms * 1000 / t.burst:.1f} us, "
            f"claim + publish {t.burst_tick.ms * 1000 / t.burst:.1f} us "
            f"(publishing one {t.chunk}-id task: "
            f"{publish / max(1, math.ceil(t.burst / t.chunk)):.2f} ms)"
        )
    print()


def headline(results: dict[str, Any]) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = dict.fromkeys(JSON_KEYS)
    if (polls := results.get("polls")) is not None:
        watcher = [r for r in polls.runs if r.kind == "watcher"]
        plains = [r for r in polls.runs if r.kind == "plain"]
        out["polls_per_s_worker"] = (
            round(watcher[0].rate, 1) if watcher and watcher[0].rate else None
        )
        if plains:
            out["polls_per_s_plain_1"] = round(plains[0].rate or 0.0, 1) or None
            out["polls_per_s_plain_8"] = round(plains[-1].rate or 0.0, 1) or None
    if (memory := results.get("memory")) is not None:
        out["redis_bytes_per_pending_payment"] = round(memory.bytes_polled)
    if (ticks := results.get("tick")) is not None:
        wall = [t.ms for t in ticks.ticks]
        out.update(
            tick_pending=ticks.pending, tick_ms_p50=round(percentile(wall, 50) or 0.0, 2),
            tick_ms_p99=round(percentile(wall, 99) or 0.0, 2), tick_ms_max=round(max(wall), 2),
            tick_claimed_mean=round(ticks.claimed_mean, 1), burst_due=ticks.burst,
            burst_claim_ms=round(ticks.burst_tick.ms, 2),
        )  # fmt: skip
    return out


# --- main -------------------------------------------------------------------------------------


def run_parts(stack: Stack, a: Any) -> dict[str, Any]:
    log("starting redis-server and the simulator")
    stack.start()
    values = stack.values(WALLET, WATCHER_SWEEP_INTERVAL="0")  # no beat runs; the worker too
    # watcher.tasks (imported later) builds its Celery app, broker included, from the
    # environment at import: this process publishes the ticks' tasks to our Redis.
    rt = stack.runtime(values, own_process=True)
    results: dict[str, Any] = {"problems": []}
    if "polls" in a.parts:
        results["polls"] = run_polls(stack, rt, values, a)
        answers = results["polls"].templates
    else:
        log(f"creating {TEMPLATES} payments on the simulator as templates")
        _, answers, _ = create_payments(rt, TEMPLATES, a.create_threads)
    stack.stop_children("worker", "simulator")
    templates = [Template(p, payment_fields(p)) for p in answers[:TEMPLATES]]
    if not templates:
        raise RuntimeError("no payment could be created on the simulator")
    scratch = stack.runtime({**values, "WATCHER_REDIS_URL": db_url(stack.redis.url, 2)})
    try:
        results["problems"] += self_check(scratch.store, templates)
    finally:
        scratch.redis.flushdb()
    if "memory" in a.parts:
        results["memory"] = run_memory(stack, values, a, templates)
    if "tick" in a.parts:
        results["tick"] = run_ticks(stack, values, rt, a, templates)
    for part in PARTS:
        results["problems"] += results[part].problems if part in results else []
    return results


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    started = time.time()

    def body(stack: Stack) -> int:
        results = run_parts(stack, a)
        header("engine benchmark", stack)
        print(f"mode: {'quick' if a.quick else 'full'}, seed {a.seed}\n")
        if "polls" in results:
            report_polls(a, results["polls"])
        if "memory" in results:
            report_memory(results["memory"])
        if "tick" in results:
            report_ticks(results["tick"])
        numbers = headline(results)
        print("Headline: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
        problems = results["problems"]
        if not problems:
            print(
                "checks: every count as expected (one GET per payment and run, one poll per "
                "record, records as PaymentStore.adopt writes them, every claimed id published "
                "once)"
            )
        print(f"total wall time: {time.time() - started:.1f}s")
        return finish(a, numbers, problems)

    return run_in_stack("engine", a, body)


if __name__ == "__main__":
    sys.exit(main())
