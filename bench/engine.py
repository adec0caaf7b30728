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

import contextlib
import functools
import math
import random
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import requests

from bench import harness as h
from bench import report as rep
from bench.engine_tick import Template, TickBench, fill_pending, self_check
from bench.naive import plain_run
from bench.report import fmt, print_table
from watcher.engine.record_fields import payment_fields
from watcher.engine.records import PaymentRecord
from watcher.engine.watching import create_and_watch
from watcher.lua import source
from watcher.runtime import Runtime, set_runtime
from watcher.voltage.models import Payment

WALLET = "wallet-bench-engine"
PROBE_EVERY = 0.005  # seconds between the bench's reads while waiting
FAR_SCHEDULE = "86400:3000"  # part 1: the next poll after the measured one is 45-55 min away
FAR_THRESHOLD = 1000.0  # a score this far ahead means "polled" (a lease is 30 s)
TEMPLATES = 100  # real simulator answers the bulk writer clones
PARTS = ("polls", "memory", "tick")
SIZES = {"polls": (300, 2000), "memory_payments": (2000, 10_000), "ticks": (10, 30),
         "tick_pending": (20_000, 100_000), "burst": (5000, 10_000)}  # fmt: skip
JSON_KEYS = (
    "polls_per_s_worker", "polls_per_s_plain_1", "polls_per_s_plain_8",
    "redis_bytes_per_pending_payment", "tick_pending", "tick_ms_p50", "tick_ms_p99", "tick_ms_max",
    "tick_claimed_mean", "burst_due", "burst_claim_ms",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> Any:
    p = rep.parser(
        "bench.engine",
        "Engine numbers: polls/s per worker, Redis bytes per pending payment, dispatcher tick "
        "time with many pending payments.",
        "300 polls, 2k payments, 20k pending, 10 ticks",
    )
    rep.options(
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

    numbers: dict[str, rep.JsonScalar] = field(default_factory=lambda: dict.fromkeys(JSON_KEYS))
    problems: list[str] = field(default_factory=list)


def create_payments(rt: Runtime, n: int, threads: int) -> tuple[list[str], list[Payment], int]:
    """N receives made and watched the production way; they stay `receiving` (1 h expiry)."""

    def one(i: int) -> tuple[str, Payment] | None:
        try:
            made = create_and_watch(rt, amount_msats=21_000 + i, description=f"Order {i:06d}",
                                    metadata={"order_id": f"order-{i:06d}"})  # fmt: skip
        except Exception as exc:
            rep.log(f"create {i} failed: {type(exc).__name__}: {exc}")
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
    rep.log("polls: starting the worker")
    pool = ["--pool", "threads", "--concurrency", str(a.concurrency), "-n", "bench-engine@%h"]
    pool += ["-Q", "watcher.poll,watcher.control", "--without-mingle", "--without-gossip"]
    stack.worker("worker", {**values, "WATCHER_POLL_SCHEDULE": FAR_SCHEDULE}, *pool, rt=rt)
    rep.log(
        f"polls: creating {a.polls} payments with create_and_watch ({a.create_threads} threads)"
    )
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
    rep.log(f"polls: ticking dispatch_polls() until all {n} are polled")
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
            f"{fmt((first - began) * 1000)} ms after the first tick began; `polls` counter "
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
        rep.log(f"polls: plain requests loop, {threads} thread(s), {len(ids)} GETs")
        usage = functools.partial(snapshot, stack, rt)
        run = plain_run("plain requests.Session loop", ids, threads, get, a.deadline, usage)
        runs.append(run)
        if run.done != len(ids):
            tally.problems.append(f"{run.label}: {run.done} of {len(ids)} GETs ok "
                                  f"({run.info['errors']} errors)")  # fmt: skip
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
        rows.append([run.label, f"{run.done}/{run.n}", fmt(run.seconds, 2), fmt(run.rate),
            *(fmt(run.rate / b, 2) if run.rate and b else "-" for b in (one, many)),
            fmt(run.ms(worker), 3), fmt(run.ms(sim), 3),
            fmt(100 * sim / d.wall if sim is not None else None), fmt(run.ms(d.redis), 3),
            fmt(run.ms(d.bench), 3), fmt(d.total_commands / run.done if run.done else None, 1),
            fmt(100 * busy / (d.wall * rep.usable_cpus()))])  # fmt: skip
    heads = f"run|done|seconds|polls/s|vs plain 1|vs plain {a.concurrency}|worker CPU|simulator "
    heads += f"CPU|sim busy %|redis CPU|bench CPU|Redis cmds/poll|% of {rep.usable_cpus()} CPUs"
    print_table("  runs (CPU ms per poll/GET; bench = this process: the plain loop, or the "
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
    rep.log(f"memory: writing {n} pending payments on a fresh redis-server ({server.url})")
    began, first = time.perf_counter(), now + rt.settings.watcher_generating_poll_interval
    ids = [str(uuid.uuid4()) for _ in range(n)]
    fields = fill_pending(store, templates, lambda _i: (now, first), ids)
    filled, adopted = time.perf_counter() - began, used_memory(r)
    rep.log("memory: one unchanged poll's bookkeeping for each (PaymentStore.record_poll)")
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
    print_table("  where the bytes go (after the poll)", ["part", "bytes", "how"], [
        [label, fmt(value), how] for label, value, how in zip(
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


def body(stack: h.Stack, a: Any) -> int:
    """The parts in order, each printing its report as it ends; then the headline."""
    started, tally = time.time(), Tally()
    rep.log("starting redis-server and the simulator")
    stack.start()
    values = stack.values(WALLET, WATCHER_SWEEP_INTERVAL="0")  # no beat runs; the worker too
    # watcher.tasks' Celery app is built from the environment at import: our Redis is its broker
    rt = stack.runtime(values, own_process=True)
    rep.header("engine benchmark", stack)
    print(f"mode: {'quick' if a.quick else 'full'}, seed {a.seed}\n")
    if "polls" in a.parts:
        answers = run_polls(stack, rt, values, a, tally)
    else:
        rep.log(f"creating {TEMPLATES} payments on the simulator as templates")
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
    return rep.finish(a, tally.numbers, tally.problems)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    return h.run_in_stack("engine", a, lambda stack: body(stack, a))


if __name__ == "__main__":
    sys.exit(main())
