"""Webhook deliveries per second: exactly one Celery worker against plain requests loops.

The runs, the tables and the checks are described in bench/README.md (`bench.deliveries`);
nothing about timing is asserted, the exit status is 1 only if a delivery was missing or doubled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import requests

from bench import harness as h
from bench.harness import Run, Stack, Usage, fmt
from watcher.delivery.attempts import USER_AGENT, attempt_delivery
from watcher.delivery.signing import WebhookVerificationError, verify, webhook_headers
from watcher.settings import Settings
from watcher.voltage.models import Payment

DEFAULT_CAP = int(Settings.model_fields["watcher_webhook_max_in_flight"].default)
POLL_EVERY = 0.005  # seconds between reads of the succeeded counter while waiting
SUCCEEDED = "deliveries:succeeded"
UNFINISHED = ("deliveries:failed", "deliveries:dead")


def parse_args(argv: Sequence[str] | None) -> Any:
    p = h.parser("bench.deliveries", "Webhook deliveries per second: one Celery worker vs a "
                 "plain requests loop.", "N=300, trace of 10")  # fmt: skip
    h.options(
        p,
        ("--deliveries", int, None, "N (default 2000)"),
        ("--pool", ("threads", "prefork"), "threads", None),
        ("--workers-concurrency", int, None, "worker --concurrency, also the plain loop's "
         "thread count (threads 8, prefork 2)"),
        ("--max-in-flight", int, None, "WATCHER_WEBHOOK_MAX_IN_FLIGHT for the throughput run "
         f"(default: the concurrency, at least {DEFAULT_CAP})"),
        ("--skip-default-cap", "store_true", False,
         f"skip the extra run with the default in-flight cap ({DEFAULT_CAP})"),
        ("--dispatch", ("bench", "beat"), "bench", None),
        ("--dispatch-interval", float, 0.2, None),
        ("--trace", int, None, "deliveries traced with redis-cli monitor (default 20, --quick "
         "10, 0 = none)"),
        ("--no-direct", "store_true", False, "skip the no-Celery run"),
        ("--deadline", float, None, "seconds per phase"),
        ("--celery-conf", "append", [], "experiment: KEY=VALUE, a Celery setting for the "
         "worker, beat and this process's dispatcher (e.g. worker_send_task_events=false); "
         "VALUE is read as JSON, else as a string"),
    )  # fmt: skip
    a = p.parse_args(argv)
    if bad := [item for item in a.celery_conf if not item.partition("=")[0] or "=" not in item]:
        p.error(f"--celery-conf expects KEY=VALUE, got {bad[0]!r}")
    a.celery_conf = dict(json_or_str(*item.split("=", 1)) for item in a.celery_conf)
    a.deliveries = a.deliveries or (300 if a.quick else 2000)
    a.concurrency = a.workers_concurrency or (8 if a.pool == "threads" else 2)
    a.cap = a.max_in_flight or max(a.concurrency, DEFAULT_CAP)
    a.trace = a.trace if a.trace is not None else (10 if a.quick else 20)
    if min(a.deliveries, a.concurrency, a.cap) < 1 or a.trace < 0 or a.dispatch_interval <= 0:
        p.error("need positive --deliveries, concurrency, cap and dispatch interval")
    if a.dispatch == "beat" and a.trace:
        h.log("--dispatch beat: no trace (beat would dispatch the traced batch on its own)")
        a.trace = 0
    a.default_cap_run = not a.skip_default_cap and a.cap != DEFAULT_CAP
    a.deadline = a.deadline or 60 + a.deliveries / 20
    return a


def json_or_str(key: str, value: str) -> tuple[str, Any]:
    with contextlib.suppress(ValueError):
        return key, json.loads(value)
    return key, value


class Bench:
    """The stack (redis-server, the receiver process, per run one worker (+ beat)), read."""

    def __init__(self, stack: Stack, a: Any) -> None:
        from watcher.redis_server import free_port

        self.stack, self.a, port = stack, a, free_port()
        stack.start(simulator=False)
        self.receiver_root = f"http://127.0.0.1:{port}"
        serve = [sys.executable, "-c", f"from bench.receiver import serve; serve({port})"]
        self.receiver = stack.spawn("receiver", serve, {})
        h.wait_for("the receiver", lambda: self.receiver_stats() is not None, 30, [self.receiver])
        self.values = stack.values(
            "wallet-bench", WATCHER_WEBHOOK_ALLOW_PRIVATE="true",
            WATCHER_DISPATCH_INTERVAL=f"{a.dispatch_interval:g}",
            WATCHER_SWEEP_INTERVAL="0",  # no Voltage here: never sweep it
            WATCHER_WEBHOOK_MAX_IN_FLIGHT=str(a.cap),
        )  # fmt: skip
        # watcher.tasks (imported lazily) builds its Celery app from the environment at import.
        self.rt = stack.runtime(self.values, own_process=True)
        if a.celery_conf:
            from watcher.celery import app

            app.conf.update(a.celery_conf)  # this process dispatches too

    def counter(self, name: str) -> int:
        self.stack.own["hget"] += 1
        value = self.rt.redis.hget(self.rt.payments.keys.counters, name)
        return int(cast(str, value)) if value else 0

    def receiver_stats(self) -> dict[str, Any]:
        response = self.stack.http.get(f"{self.receiver_root}/count", timeout=10)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def worker(self) -> Any:
        return next((c for c in self.stack.children if c.name == "worker"), None)

    def usage(self) -> Usage:
        return self.stack.usage(self.rt.redis, worker=self.worker(), receiver=self.receiver)

    def timed(self, work: Callable[[], Any]) -> tuple[float, h.Delta, Any]:
        """Wall seconds, usage and result of `work()`."""
        before, began = self.usage(), time.perf_counter()
        result = work()
        return time.perf_counter() - began, before.to(self.usage()), result


@dataclass
class Batch:
    label: str
    path: str
    secret: str
    events: list[tuple[str, bytes]]  # event id, body
    delivery_ids: list[str]
    subscriptions: int
    fan_out_seconds: float
    fan_out: h.Delta


def fake_payment(wallet: str, index: int, at: str) -> dict[str, Any]:
    """A completed receive shaped like Voltage's answer (~0.6 kB once in an event body)."""
    return {
        "id": str(uuid.uuid4()), "status": "completed", "direction": "receive",
        "type": "bolt11", "currency": "btc", "wallet_id": wallet,
        "organization_id": "org-bench", "environment_id": "env-bench", "created_at": at,
        "updated_at": at, "requested_amount": {"currency": "btc", "amount": 150_000 + index,
                                               "unit": "msat"},
        "metadata": {"order_id": f"order-{index:06d}", "source": "bench.deliveries"},
        "data": {"amount_msats": 150_000 + index, "memo": f"bench delivery {index}"},
    }  # fmt: skip


def prepare_batch(b: Bench, label: str, n: int) -> Batch:
    """A subscription of its own (path and wallet filter), N outbox events, all fanned out."""
    rt, path, wallet = b.rt, f"/hook/{label}", f"wallet-bench-{label}"
    outbox = rt.payments.keys.outbox
    sub, secret = rt.subscriptions.create(url=f"{b.receiver_root}{path}", wallet_id=wallet,
                                          description=f"bench {label}")  # fmt: skip
    newest = cast(list[tuple[str, Any]], rt.redis.xrevrange(outbox, count=1))
    cursor, now = f"({newest[0][0] if newest else '0-0'}", time.time()
    at = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    for index in range(n):
        rt.payments.adopt(Payment.from_api(fake_payment(wallet, index, at)), source="watched",
                       now=now, first_poll_at=0)  # fmt: skip
    entries: Any = rt.redis.xrange(outbox, min=cursor, max="+")
    events = [(f["event_id"], f["body"].encode()) for _, f in entries]
    if len(events) != n:
        raise RuntimeError(f"{label}: expected {n} outbox events, found {len(events)}")

    def fan_out() -> None:
        made, stop_at = 0, time.monotonic() + b.a.deadline
        while made < n:
            if time.monotonic() > stop_at:
                raise RuntimeError(f"{label}: fan-out made {made}/{n} deliveries by the deadline")
            got = rt.deliveries.fan_out_new(f"bench-{os.getpid()}", time.time(), count=500)
            made += got
            if not got:
                time.sleep(0.01)

    seconds, delta, _ = b.timed(fan_out)
    ids = rt.deliveries.list_ids(subscription_id=sub.id, newest_first=False, limit=n + 1)
    if len(ids) != n:
        raise RuntimeError(f"{label}: expected {n} deliveries, found {len(ids)}")
    subscriptions = len(rt.subscriptions.all_enabled())
    return Batch(label, path, secret, events, ids, subscriptions, seconds, delta)


def run_plain(b: Bench, batch: Batch, threads: int) -> Run:
    """The same signed bodies, signed per request, posted by plain requests loops."""
    path = f"/plain/{threads}"

    def post(session: requests.Session, event: tuple[str, bytes]) -> bool:
        headers = webhook_headers(msg_id=event[0], timestamp=int(time.time()), body=event[1],
                                  secrets=[batch.secret], user_agent=USER_AGENT)  # fmt: skip
        response = session.post(f"{b.receiver_root}{path}", data=event[1], headers=headers,
                                timeout=(5, 15))  # fmt: skip
        _ = response.content
        return response.status_code == 200

    seconds, delta, (done, errors) = b.timed(
        lambda: h.plain_loop(batch.events, threads, post, b.a.deadline)
    )
    label = f"plain requests loop, {threads} thread{'s' * (threads > 1)}"
    info = {"short": f"plain x{threads}", "path": path, "errors": errors}
    return Run(label, "plain", len(batch.events), done, seconds, delta, info)


def run_direct(b: Bench, batch: Batch, threads: int) -> Run:
    """attempt_delivery from `threads` threads of this process: the watcher minus Celery."""
    rt, seen, stop_at = b.rt, list[str](), time.monotonic() + b.a.deadline

    def attempt(_: requests.Session, delivery_id: str) -> bool:
        # rt.webhook_session: one per process, shared by its threads, as in the worker
        while time.monotonic() < stop_at:
            seen.append(attempt_delivery(rt.deliveries, rt.webhook_session, rt.delivery_policy,
                                         delivery_id, time.time()))  # fmt: skip
            if seen[-1] != "postponed":
                return seen[-1] == "succeeded"
            time.sleep(0.001)
        return False

    seconds, delta, (done, errors) = b.timed(
        lambda: h.plain_loop(batch.delivery_ids, threads, attempt, b.a.deadline)
    )
    label = f"watcher attempt_delivery, no Celery, {threads} threads"
    info = {"short": f"direct x{threads}, no Celery", "path": batch.path,
            "outcomes": Counter(seen), "errors": errors}  # fmt: skip
    return Run(label, "direct", len(batch.delivery_ids), done, seconds, delta, info)


def wait_for_deliveries(b: Bench, n: int, base: int, *, dispatch: bool) -> tuple[float | None, int]:
    """Dispatch (if asked) every interval until the succeeded counter rose by n; returns the
    time it did (None at the deadline) and how many deliveries this process sent in tasks."""
    from watcher.tasks import dispatch_due_deliveries_now

    stop_at, next_dispatch, sent = time.monotonic() + b.a.deadline, time.monotonic(), 0
    while time.monotonic() < stop_at:
        if dispatch and time.monotonic() >= next_dispatch:
            sent += dispatch_due_deliveries_now(b.rt)
            next_dispatch = time.monotonic() + b.a.dispatch_interval
        if b.counter(SUCCEEDED) - base >= n:
            return time.time(), sent
        h.check_alive(b.stack.children)
        time.sleep(POLL_EVERY)
    return None, sent


def run_watcher(b: Bench, batch: Batch, cap: int) -> Run:
    a, counters0 = b.a, b.rt.payments.counters()
    base, before, began = counters0.get(SUCCEEDED, 0), b.usage(), time.time()
    if a.dispatch == "beat":
        values = {**b.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(cap)}
        b.stack.beat("beat", values, "--loglevel", "WARNING", conf=a.celery_conf, wait=False)
    n = len(batch.events)
    done_at, sent = wait_for_deliveries(b, n, base, dispatch=a.dispatch == "bench")
    after, counters = b.usage(), b.rt.payments.counters()
    received = b.receiver_stats().get(batch.path, {})
    first = float(received.get("first") or began)
    info = {
        "short": f"watcher cap {cap}", "cap": cap, "path": batch.path,
        "counters": {k: counters.get(k, 0) - counters0.get(k, 0) for k in (SUCCEEDED, *UNFINISHED)},
        "tasks_sent": sent if a.dispatch == "bench" else None,
        "first_post_after": first - began if received else None,
    }  # fmt: skip
    default = " (default)" if cap == DEFAULT_CAP else ""
    label = f"watcher, {a.pool} x{a.concurrency}, in-flight cap {cap}{default}"
    seconds = (done_at if done_at is not None else time.time()) - first
    return Run(label, "watcher", n, counters.get(SUCCEEDED, 0) - base, seconds, before.to(after),
               info)  # fmt: skip


# --- the trace: `redis-cli monitor`, each command's client told by its port --------------------

_MONITOR_LINE = re.compile(r"^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
KEY_PURPOSES = (  # (pattern on the command's key, purpose): the first that matches
    (r"_kombu\.binding", "kombu exchange bindings (SMEMBERS)"),
    (r"unacked", "kombu acks_late bookkeeping (unacked*)"),
    (r"watcher\.", "broker queue ({cmd})"),
    (r"\{[^}]*\}:delivery:.*:attempts$", "watcher: delivery attempt log ({cmd})"),
    (r"\{[^}]*\}:delivery:", "watcher: delivery hash ({cmd})"),
    (r"\{[^}]*\}:sub:.*:inflight$", "watcher: in-flight slot ({cmd})"),
    (r"\{[^}]*\}:sub:", "watcher: subscription hash ({cmd})"),
    (r"\{[^}]*\}:schedule:", "watcher: delivery schedules ({cmd})"),
    (r"(?=\{)(?:[^:]*:)?([^:]*)", "watcher: {0} ({cmd})"),
    (r"", "other ({cmd})"),
)


def classify(command: str, args: list[str]) -> str:
    """What a command is for, told by its key."""
    if command in ("MULTI", "EXEC"):
        return "MULTI/EXEC markers"
    if command == "PUBLISH":
        return "celery task events (PUBLISH)" if "celeryev" in args[0] else "PUBLISH, other"
    key = args[0] if args else ""
    if command in ("EVALSHA", "EVAL"):
        key = args[2] if len(args) > 2 and args[1] != "0" else ""
    matches = ((re.match(pattern, key), what) for pattern, what in KEY_PURPOSES)
    return next(what.format(*m.groups(), cmd=command) for m, what in matches if m)


@dataclass
class Trace:
    n: int
    seconds: float
    tasks_sent: int
    by_category: Counter[tuple[str, str]] = field(default_factory=Counter)  # (owner, category)
    round_trips: Counter[str] = field(default_factory=Counter)  # owner -> round trips
    lua: Counter[str] = field(default_factory=Counter)  # command -> count, inside Lua scripts
    unknown: set[str] = field(default_factory=set)


def parse_monitor(trace: Trace, text: str, owners: dict[int, str], counters_key: str) -> None:
    in_multi: set[str] = set()
    for line in text.splitlines():
        match = _MONITOR_LINE.match(line)
        if match is None or not (args := _ARG.findall(match.group(2))):
            continue
        client, command, args = match.group(1), args[0].upper(), args[1:]
        if client == "lua":
            trace.lua[command] += 1
            continue
        port = client.rsplit(":", 1)[-1]
        owner = owners.get(int(port), "other") if port.isdigit() else "other"
        if owner == "other":
            trace.unknown.add(client)
        waiting = owner == "bench" and command == "HGET" and args[:1] == [counters_key]
        if waiting or command == "MONITOR":
            continue  # the bench waiting for the counter
        trace.by_category[(owner, classify(command, args))] += 1
        if command in ("EXEC", "DISCARD"):
            in_multi.discard(client)
        elif client not in in_multi:
            trace.round_trips[owner] += 1
        if command == "MULTI":
            in_multi.add(client)


def client_ports(pids: Sequence[int], server_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to `server_port`."""
    inodes: set[str] = set()
    for fd in (fd for pid in pids for fd in Path(f"/proc/{pid}/fd").glob("*")):
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
    rows = [line.split() for t in ("/proc/net/tcp", "/proc/net/tcp6")
            for line in Path(t).read_text().splitlines()[1:]]  # fmt: skip
    ours = [c for c in rows if len(c) > 9 and c[9] in inodes]
    return {int(c[1].rsplit(":", 1)[1], 16) for c in ours if int(c[2][-4:], 16) == server_port}


def run_trace(b: Bench, k: int) -> Trace:
    """K deliveries with `redis-cli monitor` attached; the worker is running and idle."""
    prepare_batch(b, "trace", k)
    log_path, port = b.stack.tmp / "monitor.log", b.stack.redis.port
    command = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "monitor"]
    monitor = b.stack.spawn("monitor", command, {})
    h.wait_for("redis-cli monitor", lambda: log_path.read_text().startswith("OK"), 10, [monitor])
    base, began = b.counter(SUCCEEDED), time.perf_counter()
    done_at, sent = wait_for_deliveries(b, k, base, dispatch=True)
    seconds = time.perf_counter() - began
    time.sleep(0.3)  # the last acknowledgements and task events
    owners = dict.fromkeys(client_ports(h.group_pids(h.pid_of(b.worker())), port), "worker")
    owners.update(dict.fromkeys(client_ports([os.getpid()], port), "bench"))
    b.stack.stop_children("monitor")
    if done_at is None:
        raise RuntimeError(f"trace: {k} deliveries did not finish before the deadline")
    trace = Trace(k, seconds, sent)
    parse_monitor(trace, log_path.read_text(errors="replace"), owners, b.rt.payments.keys.counters)
    return trace


# --- report -----------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def kinds(runs: list[Run], kind: str) -> list[Run]:
    return [r for r in runs if r.kind == kind]


def first(runs: list[Run], kind: str) -> Run | None:
    return next(iter(kinds(runs, kind)), None)


def throughput_table(a: Any, runs: list[Run]) -> None:
    one, many = (kinds(runs, "plain")[i].rate for i in (0, -1))
    rows = [[str(r.n), f"{a.pool} / {a.concurrency}", str(r.info["cap"]), fmt(r.rate), fmt(one),
             fmt(many), ratio(r.rate, many), ratio(r.rate, one)]
            for r in kinds(runs, "watcher")]  # fmt: skip
    heads = "N|pool / concurrency|in-flight cap|watcher deliveries/s per worker process|"
    heads += "plain 1 thread /s|plain {c} threads /s|ratio vs plain {c}|ratio vs plain 1"
    title = "Throughput (watcher: exactly one `celery -A watcher worker` process)"
    h.print_table(title, heads.format(c=a.concurrency).split("|"), rows)


def runs_table(runs: list[Run]) -> None:
    nproc, rows = h.usable_cpus(), []
    for run in runs:
        d = run.delta
        worker = d.groups.get("worker") if run.kind == "watcher" else 0.0
        parts = [worker, d.bench, d.redis, d.groups.get("receiver")]
        total = None if None in parts else sum(x or 0.0 for x in parts)
        busy = 100 * total / (run.seconds * nproc) if total and run.seconds else None
        cpu = [worker if run.kind == "watcher" else None, d.bench, d.redis, parts[3], total]
        rows.append([
            run.label, f"{run.done}/{run.n}", fmt(run.seconds, 2), fmt(run.rate),
            fmt(h.per(run.seconds, run.done, 1000), 3), *(fmt(run.ms(x), 3) for x in cpu),
            fmt(busy), fmt(h.per(d.total_commands, run.done), 1),
            fmt(h.per(d.total_usec, run.done), 1),
        ])  # fmt: skip
    heads = "run|done|seconds|per s|wall ms/item|worker|bench|redis|receiver|CPU total|"
    heads += f"% of {nproc} CPUs|Redis cmds/item|Redis usec/item"
    h.print_table("All runs: wall time and CPU per item (CPU ms per delivery/post; `bench` = this "
                  "process: the plain loops, the direct threads, or the dispatcher + counter "
                  "polling)", heads.split("|"), rows)  # fmt: skip


def commands_table(runs: list[Run], batch: Batch) -> None:
    columns = [(r.info["short"], r.delta, r.done) for r in runs if r.kind != "plain" and r.done]
    columns.append((f"fan-out ({batch.subscriptions} subs)", batch.fan_out, len(batch.events)))
    names: dict[str, float] = {}
    for _, delta, n in columns:
        for name, (calls, _) in delta.commands.items():
            names[name] = max(names.get(name, 0.0), calls / max(n, 1))

    def cell(calls: int, usec: int, n: int) -> str:
        return f"{calls / n:.2f} ({usec / n:.0f}us)" if calls else "-"

    rows = [[name, *(cell(*d.commands.get(name, (0, 0)), n) for _, d, n in columns)]
            for name in sorted(names, key=lambda c: -names[c])[:18]]  # fmt: skip
    rows.append(["TOTAL", *(cell(d.total_commands, d.total_usec, n) for _, d, n in columns)])
    title = "Redis commands per item from INFO commandstats: calls (Redis-side usec) per "
    title += "delivery or per fanned-out event; broker traffic included, the bench's INFO/counter "
    h.print_table(title + "reads not", ["command", *(c[0] for c in columns)], rows)


def trace_table(t: Trace) -> None:
    owners, per_n = ["worker", "bench", "other"], lambda v: fmt(v / t.n, 2) if v else "-"
    totals = {o: sum(v for (w, _), v in t.by_category.items() if w == o) for o in owners}
    categories: Counter[str] = Counter[str]()
    for (_, cat), v in t.by_category.items():
        categories[cat] += v
    rows = [[cat, *(per_n(t.by_category[(o, cat)]) for o in owners)] for cat, _ in
            categories.most_common()]  # fmt: skip
    rows.append(["TOTAL commands", *(fmt(totals[o] / t.n, 2) for o in owners)])
    rows.append(["ROUND TRIPS", *(fmt(t.round_trips[o] / t.n, 2) for o in owners)])
    h.print_table(f"Trace: Redis commands per delivery by purpose and client, from `redis-cli "
                  f"monitor` over {t.n} deliveries ({t.tasks_sent} sent in deliver tasks, "
                  f"{t.seconds:.2f}s; bench = the dispatcher here; a MULTI..EXEC block is one "
                  "round trip)", ["purpose (command)", *owners], rows)  # fmt: skip
    inside = ", ".join(f"{c} {v / t.n:.2f}" for c, v in t.lua.most_common())
    print(f"  inside Lua scripts, per delivery: {inside or '-'}")
    if t.unknown:
        print(f"  clients not attributed (closed or foreign connections): {len(t.unknown)}")
    print()


def breakdown(a: Any, runs: list[Run], trace: Trace | None) -> None:
    """CPU per delivery, layer by layer: a plain post, + the watcher's bookkeeping, + Celery."""
    plain, direct, watcher = kinds(runs, "plain")[-1], first(runs, "direct"), first(runs, "watcher")
    if watcher is None or watcher.delta.groups.get("worker") is None:
        return
    post, worker = plain.ms(plain.delta.bench) or 0.0, watcher.ms(watcher.delta.groups["worker"])
    rate, worker = watcher.rate or 0, worker or 0.0
    print(f"Where the time goes (CPU ms per delivery, main runs; one worker process at "
          f"{rate:,.0f}/s x {worker:.2f} ms = {rate * worker / 10:.0f}% of a CPU)")  # fmt: skip
    lines = [(f"a plain post (requests, signing: {plain.info['short']})", f"{post:7.3f}")]
    if direct is not None and direct.done:
        own, cmds = direct.ms(direct.delta.bench) or 0.0, direct.delta.total_commands / direct.done
        more = watcher.delta.total_commands / watcher.done - cmds
        lines += [(f"+ watcher bookkeeping ({direct.info['short']})",
                   f"{own - post:+7.3f}  ({cmds:.1f} Redis commands per delivery)"),
                  ("+ Celery/kombu in the worker (worker - direct)",
                   f"{worker - own:+7.3f}  ({more:+.1f} Redis commands per delivery)")]  # fmt: skip
    what = "dispatcher (claim + apply_async) + counter polling, bench"
    if a.dispatch != "bench":
        what = "counter polling, bench (dispatch ticks: in the worker)"
    lines += [(f"= the worker process ({watcher.info['short']})", f"{worker:7.3f}"),
              (what, f"{watcher.ms(watcher.delta.bench) or 0.0:7.3f}"),
              ("redis-server", f"{watcher.ms(watcher.delta.redis) or 0.0:7.3f}")]  # fmt: skip
    for label, value in lines:
        print(f"  {label:<58} {value}")
    if trace is not None:
        trips = [trace.round_trips[o] / trace.n for o in ("worker", "bench")]
        print(f"  Redis round trips per delivery (trace): worker {trips[0]:.1f}, dispatcher "
              f"{trips[1]:.1f}; a plain post makes none")  # fmt: skip
    print()


def verify_sample(received: dict[str, Any], secret: str) -> str:
    if not (sample := received.get("sample")):
        return "no sample"
    try:
        verify(secret, sample["headers"], sample["body"].encode(), tolerance=3600)
    except WebhookVerificationError as exc:
        return f"INVALID ({exc})"
    return "signature ok"


def sent_note(sent: int, n: int) -> str:
    """What the dispatcher's count says: re-sends above N, deliveries it never sent below."""
    if sent > n:
        return f"at least {sent - n} re-sent after 'postponed': no free slot"
    if sent < n:
        return f"{n - sent} fewer than N: the worker's delivery threads took those as they came due"
    return "as many as N"


def check_runs(b: Bench, runs: list[Run], batches: dict[str, Batch]) -> list[str]:
    """Exactly once at the receiver for every delivery; returns the problems found."""
    stats, problems = b.receiver_stats(), []
    print("Checks (receiver counts per path; signature of the first request verified)")
    for run in runs:
        i, extra = run.info, ""
        got = stats.get(i["path"], {})
        total, distinct = int(got.get("total", 0)), int(got.get("distinct", 0))
        secret = next((x.secret for x in batches.values() if x.path == i["path"]), None)
        if run.kind == "watcher":
            extra = "; counters " + ", ".join(f"{k}=+{v}" for k, v in i["counters"].items())
            if (sent := i["tasks_sent"]) is not None:
                extra += f"; deliveries sent in deliver tasks {sent} ({sent_note(sent, run.n)})"
            if i["first_post_after"] is not None:
                extra += f"; first POST {i['first_post_after'] * 1000:.0f} ms after dispatch began"
        if run.kind == "direct":
            extra = "; outcomes " + ", ".join(f"{k}={v}" for k, v in sorted(i["outcomes"].items()))
        signature = verify_sample(got, secret or batches["main"].secret)
        print(f"  {run.label}: {i['path']} total={total} distinct webhook-ids={distinct} "
              f"(expected {run.n}), errors={i.get('errors', 0)}, {signature}{extra}")  # fmt: skip
        if run.kind != "plain" and (total != run.n or distinct != run.n or run.done != run.n):
            problems.append(f"{run.label}: {total} requests, {distinct} distinct, {run.done} done")
        if run.kind == "plain" and (run.done != run.n or total != run.n):
            problems.append(f"{run.label}: {run.done} ok of {run.n}, receiver saw {total}")
    print()
    return problems


def report(b: Bench, runs: list[Run], batches: dict[str, Batch], trace: Trace | None) -> list[str]:
    a, sizes = b.a, [len(body) for _, body in batches["main"].events]
    h.header("delivery throughput benchmark", b.stack)
    dispatch = (
        f"this process calls watcher.tasks.dispatch_due_deliveries_now(rt) every "
        f"{a.dispatch_interval:g}s (claim with leases + apply_async; its CPU shows as `bench`)"
        if a.dispatch == "bench"
        else f"`celery -A watcher beat` with WATCHER_DISPATCH_INTERVAL={a.dispatch_interval:g}"
        " (dispatch ticks run in the worker)"
    )
    print(
        f"setup: receiver = stdlib ThreadingHTTPServer in its own process on 127.0.0.1 "
        f"(keep-alive, one write per answer, 200 'ok'); private redis-server "
        f"{b.stack.redis.url} is also the Celery broker; one `celery -A watcher worker --pool "
        f"{a.pool} --concurrency {a.concurrency} --without-mingle --without-gossip`\n"
        f"dispatch: {dispatch}\nthroughput run: WATCHER_WEBHOOK_MAX_IN_FLIGHT={a.cap} (>= "
        f"concurrency {a.concurrency}; default {DEFAULT_CAP}); bodies: {len(sizes)} "
        f"payment.completed events, {min(sizes)}-{max(sizes)} bytes, all fanned out before the "
        "worker started; plain loops post the main batch's bodies, signed per request with its "
        "subscription secret (webhook_headers), to their own paths of the same receiver\n"
        "time: watcher = first POST at the receiver -> `deliveries:succeeded` reached N "
        f"(polled every {POLL_EVERY * 1000:g} ms); plain/direct = loop start -> end\n"
    )
    throughput_table(a, runs)
    runs_table(runs)
    commands_table(runs, batches["main"])
    if trace is not None:
        trace_table(trace)
    breakdown(a, runs, trace)
    for x in batches.values():
        n = len(x.events)
        print(f"fan-out of '{x.label}' (before its run, not timed in it): {n} events in "
              f"{x.fan_out_seconds:.2f}s ({n / x.fan_out_seconds:,.0f}/s) with "
              f"{x.subscriptions} enabled subscriptions: "
              f"{x.fan_out.total_commands / n:.1f} Redis commands per event")  # fmt: skip
    print()
    return check_runs(b, runs, batches)


# --- main -------------------------------------------------------------------------------------


def execute(b: Bench, batches: dict[str, Batch]) -> tuple[list[Run], Trace | None]:
    a, runs, trace, n = b.a, list[Run](), None, b.a.deliveries
    scenarios = [("main", a.cap, a.trace)] + [("defaultcap", DEFAULT_CAP, 0)] * a.default_cap_run
    for label, cap, traced in scenarios:
        h.log(f"{label}: adopting {n} completed payments and fanning them out")
        batch = batches[label] = prepare_batch(b, label, n)
        for threads in dict.fromkeys((1, a.concurrency)) if label == "main" else ():
            h.log(f"plain loop, {threads} thread(s): {n} posts")
            runs.append(run_plain(b, batch, threads))
        h.log(f"{label}: starting the worker (cap {cap})")
        values = {**b.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(cap)}
        b.stack.worker("worker", values, "--pool", a.pool, "--concurrency", str(a.concurrency),
                       "--without-mingle", "--without-gossip", "-n", f"bench-{label}@%h",
                       rt=b.rt, conf=a.celery_conf)  # fmt: skip
        try:
            h.log(f"{label}: delivering {n}")
            runs.append(run_watcher(b, batch, cap))
            if traced:
                h.log(f"trace: {traced} deliveries with redis-cli monitor")
                trace = run_trace(b, traced)
        finally:
            b.stack.stop_children("beat", "worker")
    if not a.no_direct:
        h.log(f"direct: attempt_delivery from {a.concurrency} threads, {n} deliveries")
        batch = batches["direct"] = prepare_batch(b, "direct", n)
        runs.append(run_direct(b, batch, a.concurrency))
    return runs, trace


def headline(a: Any, runs: list[Run], problems: list[str]) -> dict[str, Any]:
    """The numbers `--json` writes (and `bench/run_all` shows)."""
    watchers, plains, direct = kinds(runs, "watcher"), kinds(runs, "plain"), first(runs, "direct")
    main = first(runs, "watcher")
    return {
        "bench": "deliveries", "deliveries": a.deliveries, "pool": a.pool,
        "concurrency": a.concurrency, "in_flight_cap": a.cap, "plain_threads": a.concurrency,
        "deliveries_per_s_worker": main.rate if main else None,
        "deliveries_per_s_worker_default_cap": watchers[1].rate if len(watchers) > 1 else None,
        "deliveries_per_s_plain_1": plains[0].rate if plains else None,
        "deliveries_per_s_plain_threads": plains[-1].rate if plains else None,
        "deliveries_per_s_direct": direct.rate if direct else None,
        "worker_cpu_ms_per_delivery": main.ms(main.delta.groups.get("worker")) if main else None,
        "problems": len(problems),
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    a, started = parse_args(argv), time.time()

    def body(stack: Stack) -> int:
        h.log("starting redis-server and the receiver")
        b, batches = Bench(stack, a), dict[str, Batch]()
        runs, trace = execute(b, batches)
        problems = report(b, runs, batches, trace)
        print(f"total wall time: {time.time() - started:.1f}s")
        return h.finish(a, headline(a, runs, problems), problems)

    return h.run_in_stack("deliveries", a, body)


if __name__ == "__main__":
    sys.exit(main())
