"""Part 3 of `bench.engine` (the dispatcher tick at N pending, then a burst) and the bulk writer
parts 2 and 3 fill Redis with, checked against `PaymentStore.adopt`: apart so each file stays
readable."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import redis

from bench import harness as h
from bench import report as rep
from bench.report import fmt, per, percentile, print_table
from watcher.engine.records import PaymentRecord
from watcher.engine.store import PaymentStore
from watcher.runtime import set_runtime
from watcher.voltage.models import Payment

if TYPE_CHECKING:
    from bench.engine import Tally


POLL_QUEUE = "watcher.poll"  # the kombu list the poll tasks land in (watcher.celery.QUEUE_POLL)
SELF_CHECKS = 20  # templates checked field by field against PaymentStore.adopt
FILL_PIPELINE = 500  # payments per pipeline round trip when filling
INSIDE_CLAIM = frozenset({"zadd", "zrangebyscore"})  # inside claim_due: in EVALSHA's time
TICK_ROWS = ("steady", "warmup", "burst", "claim", "drain", "empty")  # in the report's order
Template = tuple[Payment, dict[str, str]]  # a simulator answer and its payment_fields (decoded)


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
        rep.log(f"tick: writing {n} pending payments (ages uniform over {self.a.max_age:g}s)")
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
        rep.log(f"tick: 1 warm-up tick, then {self.a.ticks} ticks {interval:g}s apart")
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
        rep.log(f"tick: burst of {b} due at once")
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
            cells = (percentile(wall, 50), percentile(wall, 99), max(wall, default=None),
                     percentile([t.cpu_ms for t in ticks], 50),
                     percentile([t.redis_ms for t in ticks], 50))  # fmt: skip
            mean = per(sum(t.claimed for t in ticks), len(ticks))
            table.append([label, str(len(ticks)), *(fmt(c, 1) for c in cells), fmt(mean)])
        print_table("  ticks (ms wall; CPU = this process; Redis = commandstats usec, the claim "
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
            tick_pending=a.tick_pending, tick_ms_p50=round(percentile(wall, 50) or 0.0, 2),
            tick_ms_p99=round(percentile(wall, 99) or 0.0, 2), tick_ms_max=round(max(wall), 2),
            tick_claimed_mean=round(mean, 1), burst_due=a.burst, burst_claim_ms=round(burst, 2),
        )  # fmt: skip
