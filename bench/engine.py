"""Engine numbers: polls/s per worker, Redis bytes per pending payment, dispatcher ticks.

All on loopback, on processes of its own (a redis-server without AOF as store and broker, the
simulator, for part 1 one `celery -A watcher worker --pool threads --concurrency 8`):
1. polls/s: N payments from `create_and_watch` polled once each by the worker, through the
   production tick `dispatch_polls()` run here every second; then plain `requests` loops GET
   them (1 and 8 threads). The simulator must count one GET per payment and run.
2. Redis bytes per pending payment: N written as `create_and_watch` writes them (checked against
   `PaymentStore.adopt`) on a fresh redis-server, then one unchanged poll's `record_poll` each.
3. the tick at N pending (100k) spread as the schedule spreads them, publishing to the broker,
   the ids read back and rescheduled between ticks; then a burst of B due at once.
Exit 1 only when a count is off. Try `--quick`; `--parts tick --tick-pending 200000 --max-age 7200`.
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
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis
import requests

from bench import harness as h
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
INSIDE_CLAIM = frozenset({"zadd", "zrangebyscore"})  # inside claim_due: in EVALSHA's time
PARTS = ("polls", "memory", "tick")
TICK_ROWS = ("steady", "warmup", "burst", "claim", "drain", "empty")  # in the report's order
SIZES = {"polls": (300, 2000), "memory_payments": (2000, 10_000), "ticks": (10, 30),
         "tick_pending": (20_000, 100_000), "burst": (5000, 10_000)}  # fmt: skip
JSON_KEYS = (
    "polls_per_s_worker", "polls_per_s_plain_1", "polls_per_s_plain_8",
    "redis_bytes_per_pending_payment", "tick_pending", "tick_ms_p50", "tick_ms_p99", "tick_ms_max",
    "tick_claimed_mean", "burst_due", "burst_claim_ms",
)  # fmt: skip
Template = tuple[Payment, dict[str, str]]  # a simulator answer and its payment_fields (decoded)


def parse_args(argv: Sequence[str] | None) -> Any:
    p = h.parser(
        "bench.engine",
        "Engine numbers: polls/s per worker, Redis bytes per pending payment, dispatcher tick "
        "time with many pending payments.",
        "300 polls, 2k payments, 20k pending, 10 ticks",
    )
    h.options(
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
    for name, (quick, full) in SIZES.items():
        setattr(a, name, getattr(a, name) or (quick if a.quick else full))
    counts = [getattr(a, name) for name in SIZES] + [a.concurrency, a.create_threads]
    for failed, message in (
        (not a.parts or not set(a.parts) <= set(PARTS),
         "--parts takes a subset of " + ",".join(PARTS)),
        (min(counts) < 1, "counts must be positive"),
        (a.burst > a.tick_pending, "--burst cannot exceed --tick-pending"),
        (a.burst > 100_000, "--burst is at most 100000 (the WATCHER_DISPATCH_BATCH limit)"),
        (a.max_age <= 0, "--max-age must be positive"),
    ):  # fmt: skip
        if failed:
            p.error(message)
    a.seed = a.seed if a.seed is not None else random.randrange(1, 1_000_000)
    a.deadline = a.deadline or (60.0 + a.polls / 10)
    return a


@dataclass
class Tally:
    """The headline numbers and the problems every part adds to."""

    numbers: dict[str, h.JsonScalar] = field(default_factory=lambda: dict.fromkeys(JSON_KEYS))
    problems: list[str] = field(default_factory=list)


def clone_fields(template: Template, payment_id: str) -> dict[str, str]:
    """The fields `payment_fields` gives for the same answer under another id (no decode)."""
    raw = json.dumps({**template[0].raw, "id": payment_id}, separators=(",", ":"))
    return {**template[1], "raw": raw}


def queue_pending(pipe: Any, store: PaymentStore, pid: str, fields: dict[str, str], status: str,
                  now: float, first_poll_at: float) -> None:  # fmt: skip
    """Queue what `PaymentStore.adopt` writes for a `create_and_watch` payment, script and all."""
    record = {"id": pid, "status": status, "version": "1", "source": "created",
              "watched_at": repr(now), "status_changed_at": repr(now), "poll_count": "0",
              "error_count": "0", **fields}  # fmt: skip
    created = fields.get("created_at")
    created_at = datetime.fromisoformat(created).timestamp() if created else now
    args = [pid, repr(now), repr(first_poll_at), "1", "", "", "", repr(created_at)]
    k = store.keys
    keys = [k.payment(pid), k.payments_index, k.poll_schedule, k.outbox, k.pending_created]
    args += [x for pair in record.items() for x in pair]
    store.scripts.adopt(keys=keys, args=args, client=pipe)
    transition = {"from": None, "to": status, "at": now, "event_id": None}
    pipe.rpush(k.transitions(pid), json.dumps(transition))


def fill_pending(
    store: PaymentStore, templates: Sequence[Template], times: Callable[[int], Any], ids: list[str]
) -> list[dict[str, str]]:
    """Pending payments, FILL_PIPELINE a round trip (`times(i)`: watched, first poll at)."""
    all_fields: list[dict[str, str]] = []
    created, n = 0, len(ids)
    for start in range(0, n, FILL_PIPELINE):
        pipe = store.redis.pipeline(transaction=False)
        for i in range(start, min(n, start + FILL_PIPELINE)):
            template = templates[i % len(templates)]
            all_fields.append(clone_fields(template, ids[i]))
            queue_pending(pipe, store, ids[i], all_fields[-1], template[0].status, *times(i))
        created += sum(1 for value in pipe.execute()[0::2] if value == 1)
    if created != n:
        raise RuntimeError(f"bulk fill created {created} of {n} payments")
    return all_fields


def self_check(store: PaymentStore, templates: Sequence[Template]) -> list[str]:
    """A clone by `PaymentStore.adopt` and one by the bulk writer must leave the same keys."""
    k, r, problems = store.keys, store.redis, []
    zsets = (k.payments_index, k.poll_schedule, k.pending_created)

    def taken(pid: str) -> tuple[Any, ...]:
        state = (r.hgetall(k.payment(pid)), r.lrange(k.transitions(pid), 0, -1),
                 *(r.zscore(z, pid) for z in zsets), r.exists(k.outbox))  # fmt: skip
        r.delete(k.payment(pid), k.transitions(pid))
        for z in zsets:
            r.zrem(z, pid)
        return state

    for template in templates[:SELF_CHECKS]:
        pid, now = str(uuid.uuid4()), time.time()
        clone = Payment.from_api({**template[0].raw, "id": pid})
        store.adopt(clone, source="created", now=now, first_poll_at=now + 0.5)
        adopted, pipe = taken(pid), r.pipeline(transaction=False)
        fields = clone_fields(template, pid)
        queue_pending(pipe, store, pid, fields, template[0].status, now, now + 0.5)
        pipe.execute()
        if taken(pid) != adopted:
            problems.append(f"bulk writer differs from PaymentStore.adopt for {pid}")
    return problems


def create_payments(rt: Runtime, n: int, threads: int) -> tuple[list[str], list[Payment], int]:
    """N receives made and watched the production way; they stay `receiving` (1 h expiry)."""

    def one(i: int) -> tuple[str, Payment] | None:
        try:
            made = create_and_watch(rt, amount_msats=21_000 + i, description=f"Order {i:06d}",
                                    metadata={"order_id": f"order-{i:06d}"})  # fmt: skip
        except Exception as exc:
            h.log(f"create {i} failed: {type(exc).__name__}: {exc}")
            return None
        return (made.record.id, Payment.from_api(made.record.raw)) if made.record.raw else None

    with ThreadPoolExecutor(threads, thread_name_prefix="create") as pool:
        made = [m for m in pool.map(one, range(n)) if m is not None]
    return [m[0] for m in made], [m[1] for m in made], n - len(made)


def snapshot(stack: h.Stack, rt: Runtime) -> Any:
    groups = {c.name: c for c in stack.children if c.name in ("worker", "simulator")}
    return stack.usage(rt.redis, worker=groups.get("worker"), simulator=groups["simulator"])


def run_polls(stack: h.Stack, rt: Runtime, values: dict[str, str], a: Any, tally: Tally) -> Any:
    """The worker, then the plain loops, over the same N payments; then the counts."""
    h.log("polls: starting the worker")
    pool = ["--pool", "threads", "--concurrency", str(a.concurrency), "-n", "bench-engine@%h"]
    pool += ["-Q", "watcher.poll,watcher.control", "--without-mingle", "--without-gossip"]
    stack.worker("worker", {**values, "WATCHER_POLL_SCHEDULE": FAR_SCHEDULE}, *pool, rt=rt)
    h.log(f"polls: creating {a.polls} payments with create_and_watch ({a.create_threads} threads)")
    began = time.perf_counter()
    ids, payments, failures = create_payments(rt, a.polls, a.create_threads)
    print(f"Part 1: payment polls per second (N={a.polls} pending payments, each GET once per run; "
          f"created with create_and_watch in {time.perf_counter() - began:.1f}s)\n  watcher: one "
          f"worker --pool threads --concurrency {a.concurrency}, WATCHER_POLL_SCHEDULE="
          f"{FAR_SCHEDULE}; dispatch_polls() here every 1 s; time = first poll's start -> all N "
          f"rescheduled (read every {PROBE_EVERY * 1000:g} ms); plain = loop start -> end"
          "\n")  # fmt: skip
    if failures:
        tally.problems.append(f"{failures} of {a.polls} creates failed")
    if not ids:
        return payments
    baseline: dict[str, int] = stack.sim("GET", "/stats")["per_payment"]
    watcher, records, note = watcher_run(stack, rt, a, ids, tally)
    stack.stop_children("worker")  # part 3 must not have a consumer on the poll queue
    runs = [watcher, *plain_runs(stack, rt, a, ids, tally)]
    got: dict[str, int] = stack.sim("GET", "/stats")["per_payment"]
    off = {p: got.get(p, 0) - baseline.get(p, 0) for p in ids}
    if off := {p: gets for p, gets in off.items() if gets != len(runs)}:
        shown = ", ".join(f"{p[:8]}: +{gets}" for p, gets in list(off.items())[:5])
        tally.problems.append(f"{len(off)} payments did not get exactly {len(runs)} GETs ({shown})")
    if bad := [r for r in records if r is None or r.poll_count != 1 or r.status != "receiving"]:
        tally.problems.append(f"watcher: {len(bad)} records without exactly one poll")
    report_polls(a, runs, note, payments, tally)
    return payments


def watcher_run(stack: h.Stack, rt: Runtime, a: Any, ids: Sequence[str],
                tally: Tally) -> tuple[h.Run, list[PaymentRecord | None], str]:  # fmt: skip
    """Tick from this process until the worker has polled every payment once."""
    from watcher.tasks import dispatch_polls

    store, n, ticks = rt.payments, len(ids), []

    def count(low: float | str, high: float | str) -> int:
        stack.own["zcount"] += 1
        return int(rt.redis.zcount(store.keys.poll_schedule, low, high))

    h.wait_for("the new payments to come due", lambda: count("-inf", time.time()) >= n, 30,
               stack.children)  # fmt: skip
    polls_before = store.counters().get("polls", 0)
    set_runtime(rt)  # dispatch_polls() in this process uses our runtime
    h.log(f"polls: ticking dispatch_polls() until all {n} are polled")
    before, began, next_tick = snapshot(stack, rt), time.time(), time.monotonic()
    stop_at = next_tick + a.deadline
    try:
        while count(time.time() + FAR_THRESHOLD, "+inf") < n:
            if time.monotonic() > stop_at:
                tally.problems.append(f"watcher: not every payment was polled in {a.deadline:.0f}s")
                break
            if time.monotonic() >= next_tick:
                ticks.append(dispatch_polls())
                next_tick += rt.settings.watcher_dispatch_interval
            h.check_alive(stack.children)
            time.sleep(PROBE_EVERY)
        done_at, after = time.time(), snapshot(stack, rt)
    finally:
        set_runtime(None)
    records = store.get_many(ids)
    starts = [r.last_poll_at for r in records if r is not None and r.last_poll_at is not None]
    first = min(starts, default=began)
    if (counter := store.counters().get("polls", 0) - polls_before) != n:
        tally.problems.append(f"watcher: `polls` counter rose by {counter}, not {n}")
    note = (f"ticks: {len(ticks)} (claimed {', '.join(map(str, ticks))}); first poll "
            f"{h.fmt((first - began) * 1000)} ms after the first tick began; `polls` counter "
            f"+{counter}")  # fmt: skip
    label = f"watcher: 1 worker, threads x{a.concurrency}"
    return h.Run(label, "watcher", n, len(starts), done_at - first, before.to(after)), records, note


def plain_runs(stack: h.Stack, rt: Runtime, a: Any, ids: Sequence[str], tally: Tally) -> list[Any]:
    """The same GETs from plain `requests.Session` loops, no watcher code: 1 thread, then N."""

    def get(session: requests.Session, pid: str) -> bool:
        answer = session.get(f"{stack.payments_url}/{pid}", headers={"x-api-key": h.API_KEY},
                             timeout=(3.05, 10))  # fmt: skip
        return answer.status_code == 200 and answer.json()["status"] == "receiving"

    runs = []
    for threads in dict.fromkeys((1, a.concurrency)):
        h.log(f"polls: plain requests loop, {threads} thread(s), {len(ids)} GETs")
        before, t0 = snapshot(stack, rt), time.perf_counter()
        ok, errors = h.plain_loop(ids, threads, get, a.deadline)
        seconds = time.perf_counter() - t0
        label = f"plain requests.Session loop, {threads} thread{'s' * (threads > 1)}"
        runs.append(h.Run(label, "plain", len(ids), ok, seconds, before.to(snapshot(stack, rt))))
        if ok != len(ids):
            tally.problems.append(f"{label}: {ok} of {len(ids)} GETs ok ({errors} errors)")
    return runs


def fields_cost(payments: Sequence[Payment]) -> list[float]:
    """CPU ms of an unchanged poll's `payment_fields()` and of a BOLT11 decode (best of 3)."""
    calls = (lambda p: payment_fields(p, decoded_request=p.payment_request), Payment.invoice)
    best, sample = [math.inf, math.inf], payments[:TEMPLATES]
    for _ in range(3):
        for i, call in enumerate(calls):
            cpu = time.process_time()
            for payment in sample:
                call(payment)
            best[i] = min(best[i], (time.process_time() - cpu) * 1000 / len(sample))
    return best


def report_polls(a: Any, runs: Sequence[h.Run], note: str, payments: Sequence[Payment],
                 tally: Tally) -> None:  # fmt: skip
    watcher, one, many = runs[0], runs[1].rate, runs[-1].rate
    rows = []
    for run in runs:
        d, sim = run.delta, run.delta.groups.get("simulator")
        worker = d.groups.get("worker") if run.kind == "watcher" else None
        busy = (worker or 0.0) + (sim or 0.0) + d.redis + d.bench
        rows.append([run.label, f"{run.done}/{run.n}", h.fmt(run.seconds, 2), h.fmt(run.rate),
            *(h.fmt(run.rate / b, 2) if run.rate and b else "-" for b in (one, many)),
            h.fmt(run.ms(worker), 3), h.fmt(run.ms(sim), 3),
            h.fmt(100 * sim / d.wall if sim is not None else None), h.fmt(run.ms(d.redis), 3),
            h.fmt(run.ms(d.bench), 3), h.fmt(d.total_commands / run.done if run.done else None, 1),
            h.fmt(100 * busy / (d.wall * h.usable_cpus()))])  # fmt: skip
    heads = f"run|done|seconds|polls/s|vs plain 1|vs plain {a.concurrency}|worker CPU|simulator "
    heads += f"CPU|sim busy %|redis CPU|bench CPU|Redis cmds/poll|% of {h.usable_cpus()} CPUs"
    h.print_table("  runs (CPU ms per poll/GET; bench = this process: the plain loop, or the "
                  "dispatch ticks + waiting)", heads.split("|"), rows)  # fmt: skip
    tally.numbers["polls_per_s_plain_1"] = round(one or 0.0, 1) or None
    tally.numbers["polls_per_s_plain_8"] = round(many or 0.0, 1) or None
    if watcher.rate:
        tally.numbers["polls_per_s_worker"] = round(watcher.rate, 1)
        faster = max(r.rate or 0.0 for r in runs[1:]) > watcher.rate
        print(f"  {note}; " + ("the simulator answered a plain loop faster, so it was not the "
              "watcher's bottleneck" if faster else "the plain loops were no faster than the "
              "watcher: the simulator (or the machine) may be the limit here"))  # fmt: skip
        fields_ms, decode_ms = fields_cost(payments)
        if worker_ms := watcher.ms(watcher.delta.groups.get("worker")):
            print(f"  an unchanged poll's payment_fields() (no decode): {fields_ms:.2f} ms CPU, "
                  f"{100 * fields_ms / worker_ms:.0f}% of the worker's {worker_ms:.2f} ms per "
                  f"poll; one BOLT11 decode (a first poll, a new invoice): {decode_ms:.2f} "
                  "ms")  # fmt: skip
    print()


def used_memory(client: redis.Redis) -> int:
    """On a new connection: a pipeline's query buffer, held by its connection, is not data."""
    client.connection_pool.disconnect()
    return int(client.info("memory")["used_memory"])


def run_memory(stack: h.Stack, values: dict[str, str], a: Any, templates: Sequence[Template],
               tally: Tally) -> None:  # fmt: skip
    """On a redis-server of its own: used_memory before and after N pending payments."""
    n, server = a.memory_payments, stack.new_redis("redis-memory")
    rt = stack.runtime({**values, "WATCHER_REDIS_URL": server.url})
    store, r, k = rt.payments, rt.redis, rt.payments.keys

    def size(key: str) -> int:
        return int(cast(int, r.memory_usage(key, samples=0)) or 0)

    r.script_load(source("adopt"))  # the script cache belongs to the baseline, not the payments
    before, now = used_memory(r), time.time()
    h.log(f"memory: writing {n} pending payments on a fresh redis-server ({server.url})")
    began, first = time.perf_counter(), now + rt.settings.watcher_generating_poll_interval
    ids = [str(uuid.uuid4()) for _ in range(n)]
    fields = fill_pending(store, templates, lambda _i: (now, first), ids)
    filled, adopted = time.perf_counter() - began, used_memory(r)
    h.log("memory: one unchanged poll's bookkeeping for each (PaymentStore.record_poll)")
    for pid, payment in zip(ids, fields, strict=True):
        store.record_poll(pid, now=time.time(), fields=payment)
    each = (used_memory(r) - before) / n
    sample = ids[:: max(1, n // 200)]
    record = cast(dict[str, str], r.hgetall(k.payment(sample[0])))
    encoding = str(r.object("encoding", k.payment(sample[0])))
    sizes = [sum(size(key(i)) for i in sample) / len(sample) for key in (k.payment, k.transitions)]
    sizes += [size(k.payments_index) / n, size(k.poll_schedule) / n]
    mean = f"MEMORY USAGE, mean of {len(sample)}"
    print(f"Part 2: Redis memory per pending payment (N={n}, fresh redis-server, used_memory from "
          f"INFO memory; written as create_and_watch writes them, verified against PaymentStore."
          f"adopt; {filled:.1f}s to write)\n  just adopted (hash, transitions, index, schedule): "
          f"{(adopted - before) / n:,.0f} B\n  after one unchanged poll (record_poll adds "
          f"last_poll_at, error_streak, ...): {each:,.0f} B   <- headline")  # fmt: skip
    h.print_table("  where the bytes go (after the poll)", ["part", "bytes", "how"], [
        [label, h.fmt(value), how] for label, value, how in zip(
            ("record hash", "transitions list (one entry)", "payments index (zset) entry",
             "poll schedule (zset) entry", "the rest"), [*sizes, each - sum(sizes)],
            (f"{mean}; {len(record)} fields, encoding {encoding}", mean, "MEMORY USAGE / N",
             "MEMORY USAGE / N", "keyspace and hash tables, allocator rounding (fixed part "
             "shrinks as N grows)"), strict=True)])  # fmt: skip
    biggest = sorted(((key, len(key) + len(v)) for key, v in record.items()), key=lambda x: -x[1])
    print(f"  the record: {len(record)} fields, {sum(s for _, s in biggest):,} bytes of field "
          f"names + values (biggest: {', '.join(f'{key} {v:,}' for key, v in biggest[:4])}), "
          f"encoding {encoding}")  # fmt: skip
    with contextlib.suppress(redis.RedisError):  # scratch keys, after the measurements
        limit = r.config_get("hash-max-listpack-value")["hash-max-listpack-value"]
        r.config_set("hash-max-listpack-value", 1024)
        r.hset("bench:listpack", mapping=cast(Any, record))
        r.config_set("hash-max-listpack-value", limit)
        r.hset("bench:raw-less", mapping=cast(Any, {x: v for x, v in record.items() if x != "raw"}))
        if r.object("encoding", "bench:listpack") == "listpack":
            print(f"  the same record as a listpack (hash-max-listpack-value 1024): "
                  f"{size('bench:listpack'):,} B; without its `raw` field (today's encoding): "
                  f"{size('bench:raw-less'):,} B")  # fmt: skip
    print()
    if int(r.zcard(k.poll_schedule)) != n or int(r.zcard(k.payments_index)) != n:
        tally.problems.append("memory: schedule or index does not hold every payment")
    tally.numbers["redis_bytes_per_pending_payment"] = round(each)


@dataclass
class Tick:
    ms: float
    cpu_ms: float
    claimed: int
    redis_ms: float
    commands: dict[str, tuple[int, int]]  # name: (calls, usec)


class TickBench:
    """Part 3's steps over one runtime (store in database 1) and the broker (database 0)."""

    def __init__(self, stack: h.Stack, values: dict[str, str], broker: redis.Redis, a: Any,
                 tally: Tally) -> None:  # fmt: skip
        # a fresh database of the same server: the broker stays in database 0
        rt = stack.runtime({**values, "WATCHER_REDIS_URL": h.db_url(stack.redis.url, 1)})
        self.stack, self.rt, self.store, self.broker, self.a = stack, rt, rt.payments, broker, a
        self.rng, self.tally, self.demand = random.Random(a.seed), tally, 0.0
        self.watched_at: dict[str, float] = {}
        self.rows: dict[str, list[Tick]] = {row: [] for row in TICK_ROWS}

    def timed(self, row: str | None, call: Callable[[], int] | None = None) -> Tick:
        """Wall, CPU and Redis time (commandstats) of one call, by default the production tick."""
        from watcher.tasks import dispatch_polls

        before, cpu, began = self.stack.usage(self.broker), time.process_time(), time.perf_counter()
        claimed = (call or dispatch_polls)()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        delta = before.to(self.stack.usage(self.broker))
        commands = {name: v for name, v in delta.commands.items() if name != "info"}
        redis_usec = sum(u for name, (_, u) in commands.items() if name not in INSIDE_CLAIM)
        tick = Tick(wall * 1000, cpu * 1000, claimed, redis_usec / 1000, commands)
        if row:
            self.rows[row].append(tick)
        return tick

    def published(self, claimed: int, what: str, expected: Sequence[str] = ()) -> list[str]:
        """Every claimed id must be in the broker's poll queue once (kombu envelopes); emptied."""
        got: list[str] = []
        for message in map(json.loads, cast(list[str], self.broker.lrange(POLL_QUEUE, 0, -1))):
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            if message.get("headers", {}).get("task") == "watcher.poll_payments":
                got.extend(json.loads(body)[0][0])
        self.broker.delete(POLL_QUEUE)
        wrong = len(got) != claimed or len(set(got)) != len(got)
        if wrong or (expected and sorted(got) != sorted(expected)):
            self.tally.problems.append(f"{what}: claimed {claimed}, published {len(got)} ids")
        return got

    def record(self, pid: str) -> PaymentRecord:
        return PaymentRecord(id=pid, status="receiving", version=1, source="created",
                             watched_at=self.watched_at[pid])  # fmt: skip

    def rescore(self, ids: Sequence[str], scores: Sequence[float]) -> None:
        """Set next-poll times in bulk (ZADD XX: only members still scheduled)."""
        for i in range(0, len(ids), 5000):
            mapping = dict(zip(ids[i : i + 5000], scores[i : i + 5000], strict=True))
            self.store.redis.zadd(self.store.keys.poll_schedule, cast(Any, mapping), xx=True)

    def polled(self, ids: Sequence[str]) -> None:
        """Stand in for the workers: each claimed payment gets the next poll PollPolicy gives."""
        now = time.time()
        self.rescore(ids, [self.rt.poll_policy.next_poll(self.record(pid), now) for pid in ids])

    def fill(self, templates: Sequence[Template]) -> str:
        """Ages uniform over --max-age, next polls uniform within PollPolicy's interval."""
        n, now = self.a.tick_pending, time.time()
        ages = [self.rng.uniform(0.0, self.a.max_age) for _ in range(n)]
        h.log(f"tick: writing {n} pending payments (ages uniform over {self.a.max_age:g}s)")
        began = time.perf_counter()
        ids = [str(uuid.uuid4()) for _ in range(n)]
        fill_pending(self.store, templates, lambda i: (now - ages[i], now + 864e3), ids)
        filled = time.perf_counter() - began
        self.watched_at = {pid: now - age for pid, age in zip(ids, ages, strict=True)}
        intervals = [self.rt.poll_policy.interval(self.record(pid), now) for pid in ids]
        residuals = [self.rng.uniform(0.0, i) for i in intervals]
        began, base = time.perf_counter(), time.time()
        self.rescore(ids, [base + x for x in residuals])
        self.demand = sum(1.0 / i for i in intervals)
        return f"written in {filled:.1f}s + {time.perf_counter() - began:.1f}s"

    def steady(self) -> int:
        """A warm-up tick, then K ticks one interval apart; what is due and unclaimed after."""
        self.broker.delete(POLL_QUEUE)
        interval = self.rt.settings.watcher_dispatch_interval
        h.log(f"tick: 1 warm-up tick, then {self.a.ticks} ticks {interval:g}s apart")
        self.polled(self.published(self.timed("warmup").claimed, "warm-up tick"))
        start = time.monotonic() + interval
        for k in range(self.a.ticks):
            while (wait := start + k * interval - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
            self.polled(self.published(self.timed("steady").claimed, f"steady tick {k + 1}"))
        return int(self.rt.redis.zcount(self.store.keys.poll_schedule, "-inf", time.time()))

    def arm_burst(self, burst_ids: Sequence[str]) -> None:
        """Everything due in 10-60 minutes, except `burst_ids`: due now."""
        t, ids = time.time(), list(self.watched_at)
        self.rescore(ids, [t + 600 + self.rng.uniform(0, 3000) for _ in ids])
        self.rescore(burst_ids, [t - self.rng.uniform(0, 1) for _ in burst_ids])

    def bursts(self) -> None:
        """B due at once: one tick with batch B, the claim alone, default ticks until drained."""
        from watcher.engine.dispatcher import dispatch_due_polls

        b, s = self.a.burst, self.rt.settings
        h.log(f"tick: burst of {b} due at once")
        self.arm_burst(burst_ids := self.rng.sample(list(self.watched_at), b))
        wide = s.model_copy(update={"watcher_dispatch_batch": b})
        set_runtime(dataclasses.replace(self.rt, settings=wide))
        self.published(self.timed("burst").claimed, "burst tick", burst_ids)
        set_runtime(self.rt)
        self.arm_burst(burst_ids)
        claim = self.timed("claim", lambda: dispatch_due_polls(
            self.store, now=time.time(), lease=s.watcher_claim_lease,
            lookahead=s.watcher_dispatch_interval / 2, max_items=b,
            chunk_size=s.watcher_poll_chunk, send=lambda _ids: None))  # fmt: skip
        if claim.claimed != b:
            self.tally.problems.append(f"claim-only run claimed {claim.claimed} of {b}")
        self.arm_burst(burst_ids)
        for _ in range(math.ceil(b / s.watcher_dispatch_batch) + 1):
            if not (tick := self.timed(None)).claimed:
                break
            self.rows["drain"].append(tick)
        drained = sum(t.claimed for t in self.rows["drain"])
        self.published(drained, "default ticks on the burst", burst_ids)
        if sum(self.timed("empty").claimed for _ in range(5)):
            self.tally.problems.append("a tick with nothing due claimed something")
        self.broker.delete(POLL_QUEUE)

    def run(self, templates: Sequence[Template]) -> None:
        """Fill, tick in real time, the bursts; then the report."""
        try:
            if int(self.rt.redis.dbsize()) != 0:
                raise RuntimeError("database 1 is not empty")
            written = self.fill(templates)
            set_runtime(self.rt)
            backlog = self.steady()
            self.bursts()
        finally:
            set_runtime(None)
            with contextlib.suppress(redis.RedisError):
                self.rt.redis.flushdb()
        self.report(written, backlog)

    def report(self, written: str, backlog: int) -> None:
        s, a, rows, b = self.rt.settings, self.a, self.rows, f"{self.a.burst:,}"
        knobs = ("dispatch_batch", "poll_chunk", "claim_lease", "dispatch_interval")
        shown = ", ".join(f"WATCHER_{k.upper()}={getattr(s, 'watcher_' + k):g}" for k in knobs)
        schedule = ",".join(f"{x:g}:{y:g}" for x, y in s.watcher_poll_schedule)
        cap = s.watcher_dispatch_batch / s.watcher_dispatch_interval
        print(f"Part 3: dispatcher tick with {a.tick_pending:,} pending payments (fresh database; "
              f"ages uniform over {a.max_age:g}s, next poll within the schedule's interval for "
              f"that age; {written})\n  tick = dispatch_polls() here, publishing to the broker, "
              f"default settings ({shown} (lookahead {s.watcher_dispatch_interval / 2:g} s), poll "
              f"schedule {schedule})\n  due by the schedule's arithmetic: {self.demand:,.0f} "
              f"polls/s; the dispatcher hands out at most {cap:,.0f}/s; due and unclaimed after "
              f"the run: {backlog:,}\n")  # fmt: skip
        labels = (f"steady, 1 tick/s ({a.tick_pending:,} pending)",
                  "warm-up tick (not in the steady rows)",
                  f"burst: {b} due, one tick with batch {b}", f"burst: claim only, no publishing "
                  f"({b})", "burst: default ticks until drained", "nothing due")  # fmt: skip
        table = []
        for label, ticks in zip(labels, rows.values(), strict=True):
            wall = [t.ms for t in ticks]
            cells = (h.percentile(wall, 50), h.percentile(wall, 99), max(wall, default=None),
                     h.percentile([t.cpu_ms for t in ticks], 50),
                     h.percentile([t.redis_ms for t in ticks], 50))  # fmt: skip
            mean = h.per(sum(t.claimed for t in ticks), len(ticks))
            table.append([label, str(len(ticks)), *(h.fmt(c, 1) for c in cells), h.fmt(mean)])
        h.print_table("  ticks (ms wall; CPU = this process; Redis = commandstats usec, the claim "
                      "script counted whole; nearest-rank percentiles)",
                      ["", "ticks", "p50 ms", "p99 ms", "max ms", "p50 CPU ms", "p50 Redis ms",
                       "claimed/tick"], table)  # fmt: skip
        calls, usec, k = Counter[str](), Counter[str](), len(rows["steady"])
        for name, (n, u) in (kv for tick in rows["steady"] for kv in tick.commands.items()):
            calls[name], usec[name] = calls[name] + n, usec[name] + u
        top = ", ".join(f"{x} {calls[x] / k:.0f} ({usec[x] / k / 1000:.1f} ms)"
                        for x in sorted(usec, key=lambda x: -usec[x])[:7])  # fmt: skip
        drain, burst, claim = len(rows["drain"]), rows["burst"][0].ms, rows["claim"][0].ms
        mean = sum(t.claimed for t in rows["steady"]) / k
        print(f"  a burst of {b} takes {drain} default ticks, so the last of it is handed out "
              f"about {max(0, drain - 1)} s after the first (1 tick/s)\n  Redis per steady "
              f"tick, calls (Redis-side time): {top}")  # fmt: skip
        if mean:
            tasks = max(1, math.ceil(a.burst / s.watcher_poll_chunk))
            print(f"  per claimed payment: claim {claim * 1000 / a.burst:.1f} us, claim + publish "
                  f"{burst * 1000 / a.burst:.1f} us (publishing one {s.watcher_poll_chunk}-id "
                  f"task: {(burst - claim) / tasks:.2f} ms)")  # fmt: skip
        print()
        wall = [t.ms for t in rows["steady"]]
        self.tally.numbers.update(
            tick_pending=a.tick_pending, tick_ms_p50=round(h.percentile(wall, 50) or 0.0, 2),
            tick_ms_p99=round(h.percentile(wall, 99) or 0.0, 2), tick_ms_max=round(max(wall), 2),
            tick_claimed_mean=round(mean, 1), burst_due=a.burst, burst_claim_ms=round(burst, 2),
        )  # fmt: skip


def body(stack: h.Stack, a: Any) -> int:
    """The parts in order, each printing its report as it ends; then the headline."""
    started, tally = time.time(), Tally()
    h.log("starting redis-server and the simulator")
    stack.start()
    values = stack.values(WALLET, WATCHER_SWEEP_INTERVAL="0")  # no beat runs; the worker too
    # watcher.tasks' Celery app is built from the environment at import: our Redis is its broker
    rt = stack.runtime(values, own_process=True)
    h.header("engine benchmark", stack)
    print(f"mode: {'quick' if a.quick else 'full'}, seed {a.seed}\n")
    if "polls" in a.parts:
        answers = run_polls(stack, rt, values, a, tally)
    else:
        h.log(f"creating {TEMPLATES} payments on the simulator as templates")
        answers = create_payments(rt, TEMPLATES, a.create_threads)[1]
    stack.stop_children("worker", "simulator")
    if not (templates := [(p, payment_fields(p)) for p in answers[:TEMPLATES]]):
        raise RuntimeError("no payment could be created on the simulator")
    scratch = stack.runtime({**values, "WATCHER_REDIS_URL": h.db_url(stack.redis.url, 2)})
    try:
        tally.problems[:0] = self_check(scratch.payments, templates)
    finally:
        scratch.redis.flushdb()
    if "memory" in a.parts:
        run_memory(stack, values, a, templates, tally)
    if "tick" in a.parts:
        TickBench(stack, values, rt.redis, a, tally).run(templates)
    print("Headline: " + ", ".join(f"{k}={v}" for k, v in tally.numbers.items()))
    if not tally.problems:
        print(
            "checks: every count as expected (one GET per payment and run, one poll per record, "
            "records as PaymentStore.adopt writes them, every claimed id published once)"
        )
    print(f"total wall time: {time.time() - started:.1f}s")
    return h.finish(a, tally.numbers, tally.problems)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    return h.run_in_stack("engine", a, lambda stack: body(stack, a))


if __name__ == "__main__":
    sys.exit(main())
