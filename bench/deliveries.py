"""Webhook delivery throughput: the watcher's Celery delivery path against a plain requests loop.

Everything runs on loopback, in a temporary directory: a private redis-server (also the Celery
broker, as in production), a webhook receiver in its own process (stdlib ThreadingHTTPServer,
HTTP/1.1 keep-alive, answers 200 "ok", counts requests and distinct webhook-ids per path, read
back with GET /count), and exactly one `celery -A watcher worker` per watcher run.

Each watcher run gets its own batch: N already-completed payments are adopted (one outbox event
each), a subscription (its own URL path and wallet filter) is created, and every event is fanned
out into a delivery *before* the worker starts, so the measurement is delivery only. Then:

* **watcher**: the worker delivers the batch; deliveries are dispatched either by this process
  calling `watcher.tasks.dispatch_due_deliveries_now(rt)` every `--dispatch-interval` seconds
  (default: claims with leases, sends `watcher.deliver` tasks; the dispatch cost lands in this
  process) or by `celery -A watcher beat` ticking `WATCHER_DISPATCH_INTERVAL` (`--dispatch beat`,
  the dispatch cost lands in the worker). Time = first POST at the receiver -> the moment the
  `deliveries:succeeded` counter shows the whole batch.
* **plain 1 thread / plain C threads**: the same N signed bodies of the main batch (same event
  ids, same subscription secret, signed per request with `webhook_headers`) posted by one
  `requests.Session` loop, then by C threads with a Session each (C = worker concurrency).
* **direct** (diagnostic, `--no-direct` skips it): `attempt_delivery` called from C threads in
  this process, without Celery, on a batch of its own: the Redis bookkeeping without the broker.
* **trace** (diagnostic, `--trace K`, bench dispatch only): K more deliveries with
  `redis-cli monitor` attached, every command attributed to the worker or this process by its
  client port, to count commands and round trips per delivery.

CPU seconds come from /proc (worker and receiver process groups), `time.process_time()` (this
process) and `INFO cpu` (redis-server); Redis commands from `INFO commandstats` diffs. Nothing
about timing is asserted; the exit status is 1 only if a delivery was missing or duplicated.

Run (from the project root):

    .venv/bin/python -m bench.deliveries --quick                 # N=300, ~30 s
    .venv/bin/python -m bench.deliveries                         # N=2000, ~1-2 minutes
    .venv/bin/python -m bench.deliveries --pool prefork          # --workers-concurrency 2
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
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
    p = h.parser(
        "bench.deliveries",
        "Webhook deliveries per second: one Celery worker vs a plain requests loop.",
        "N=300, trace of 10",
    )
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
    conf: dict[str, Any] = {}
    for item in a.celery_conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--celery-conf expects KEY=VALUE, got {item!r}")
        try:
            conf[key] = json.loads(value)
        except ValueError:
            conf[key] = value
    a.celery_conf = conf
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


# --- the stack --------------------------------------------------------------------------------


class Bench:
    """The stack (redis-server, the receiver process, per run one worker (+ beat)), read."""

    def __init__(self, stack: Stack, a: Any) -> None:
        from watcher.redis_server import free_port

        self.stack, self.a = stack, a
        stack.start(simulator=False)
        port = free_port()
        self.receiver_root = f"http://127.0.0.1:{port}"
        serve = f"from bench.receiver import serve; serve({port})"
        receiver = stack.spawn("receiver", [sys.executable, "-c", serve], {})
        self.receiver = receiver
        h.wait_for("the receiver", lambda: self.receiver_stats() is not None, 30, [receiver])
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

    def start_celery(self, label: str, cap: int) -> None:
        values = {**self.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(cap)}
        pool = ["--pool", self.a.pool, "--concurrency", str(self.a.concurrency)]
        args = [*pool, "--without-mingle", "--without-gossip", "-n", f"bench-{label}@%h"]
        self.stack.worker("worker", values, *args, rt=self.rt, conf=self.a.celery_conf)

    def counter(self, name: str) -> int:
        self.stack.own["hget"] += 1
        value = self.rt.redis.hget(self.rt.store.keys.counters, name)
        return int(cast(str, value)) if value else 0

    def receiver_stats(self) -> dict[str, Any]:
        response = self.stack.http.get(f"{self.receiver_root}/count", timeout=10)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def usage(self) -> Usage:
        worker = next((c for c in self.stack.children if c.name == "worker"), None)
        return self.stack.usage(self.rt.redis, worker=worker, receiver=self.receiver)


# --- batches ----------------------------------------------------------------------------------


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


def fake_payment(wallet: str, index: int, now: float) -> dict[str, Any]:
    """A completed receive shaped like Voltage's answer (~0.6 kB once in an event body)."""
    at = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    amount = {"currency": "btc", "amount": 150_000 + index, "unit": "msat"}
    return {
        "id": str(uuid.uuid4()), "status": "completed", "direction": "receive",
        "type": "bolt11", "currency": "btc", "wallet_id": wallet,
        "organization_id": "org-bench", "environment_id": "env-bench", "created_at": at,
        "updated_at": at, "requested_amount": amount,
        "metadata": {"order_id": f"order-{index:06d}", "source": "bench.deliveries"},
        "data": {"amount_msats": 150_000 + index, "memo": f"bench delivery {index}"},
    }  # fmt: skip


def prepare_batch(b: Bench, label: str, n: int) -> Batch:
    """A subscription of its own (path and wallet filter), N outbox events, all fanned out."""
    rt, path, wallet = b.rt, f"/hook/{label}", f"wallet-bench-{label}"
    url = f"{b.receiver_root}{path}"
    sub, secret = rt.subscriptions.create(url=url, wallet_id=wallet, description=f"bench {label}")
    outbox = rt.store.keys.outbox
    newest = cast(list[tuple[str, Any]], rt.redis.xrevrange(outbox, count=1))
    cursor, now = f"({newest[0][0] if newest else '0-0'}", time.time()
    for index in range(n):
        payment = Payment.from_api(fake_payment(wallet, index, now))
        rt.store.adopt(payment, source="watched", now=now, first_poll_at=0)
    events: list[tuple[str, bytes]] = []
    while len(events) < n:
        chunk: Any = rt.redis.xrange(outbox, min=cursor, max="+", count=1000)
        if not chunk:
            break
        events.extend((f["event_id"], f["body"].encode()) for _, f in chunk)
        cursor = f"({chunk[-1][0]}"
    if len(events) != n:
        raise RuntimeError(f"{label}: expected {n} outbox events, found {len(events)}")
    before, made = b.usage(), 0
    began, stop_at = time.perf_counter(), time.monotonic() + b.a.deadline
    while made < n:
        if time.monotonic() > stop_at:
            raise RuntimeError(f"{label}: fan-out made {made}/{n} deliveries before the deadline")
        got = rt.deliveries.fan_out_new(f"bench-{os.getpid()}", time.time(), count=500)
        made += got
        if not got:
            time.sleep(0.01)
    seconds, fan_out = time.perf_counter() - began, before.to(b.usage())
    ids = rt.deliveries.list_ids(subscription_id=sub.id, newest_first=False, limit=n + 1)
    if len(ids) != n:
        raise RuntimeError(f"{label}: expected {n} deliveries, found {len(ids)}")
    subscriptions = len(rt.subscriptions.all_enabled())
    return Batch(label, path, secret, events, ids, subscriptions, seconds, fan_out)


# --- runs -------------------------------------------------------------------------------------


def run_plain(b: Bench, batch: Batch, threads: int) -> Run:
    """The same signed bodies, signed per request, posted by plain requests loops."""
    path = f"/plain/{threads}"
    url = f"{b.receiver_root}{path}"

    def post(session: requests.Session, event: tuple[str, bytes]) -> bool:
        headers = webhook_headers(msg_id=event[0], timestamp=int(time.time()), body=event[1],
                                  secrets=[batch.secret], user_agent=USER_AGENT)  # fmt: skip
        response = session.post(url, data=event[1], headers=headers, timeout=(5, 15))
        _ = response.content
        return response.status_code == 200

    before, began = b.usage(), time.perf_counter()
    done, errors = h.plain_loop(batch.events, threads, post, b.a.deadline)
    seconds, delta = time.perf_counter() - began, before.to(b.usage())
    label = f"plain requests loop, {threads} thread{'s' * (threads > 1)}"
    info = {"short": f"plain x{threads}", "path": path, "errors": errors}
    return Run(label, "plain", len(batch.events), done, seconds, delta, info)


def run_direct(b: Bench, batch: Batch, threads: int) -> Run:
    """attempt_delivery from `threads` threads of this process: the watcher minus Celery."""
    rt = b.rt
    session = rt.webhook_session  # one per process, shared by its threads, as in the worker
    outcomes: Counter[str] = Counter()
    lock, stop_at = threading.Lock(), time.monotonic() + b.a.deadline

    def work(ids: Sequence[str]) -> None:
        for delivery_id in ids:
            while time.monotonic() < stop_at:
                now = time.time()
                outcome = attempt_delivery(rt.deliveries, session, rt.delivery_policy,
                                           delivery_id, now)  # fmt: skip
                with lock:
                    outcomes[outcome] += 1
                if outcome != "postponed":
                    break
                time.sleep(0.001)

    slices = [batch.delivery_ids[i::threads] for i in range(threads)]
    before, began = b.usage(), time.perf_counter()
    workers = [threading.Thread(target=work, args=(s,), name="direct") for s in slices]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(max(1.0, stop_at - time.monotonic() + 20))
    seconds, delta = time.perf_counter() - began, before.to(b.usage())
    label = f"watcher attempt_delivery, no Celery, {threads} threads"
    info = {"short": f"direct x{threads}, no Celery", "path": batch.path, "outcomes": outcomes}
    return Run(label, "direct", len(batch.delivery_ids), outcomes["succeeded"], seconds, delta,
               info)  # fmt: skip


def wait_for_deliveries(b: Bench, n: int, base: int, *, dispatch: bool) -> tuple[float | None, int]:
    """Dispatch (if asked) every interval until the succeeded counter rose by n; returns the
    time it did (None at the deadline) and how many deliver tasks this process sent."""
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


def run_watcher(b: Bench, batch: Batch, label: str, cap: int) -> Run:
    a, counters0 = b.a, b.rt.store.counters()
    base, before, began = counters0.get(SUCCEEDED, 0), b.usage(), time.time()
    if a.dispatch == "beat":
        values = {**b.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(cap)}
        b.stack.beat("beat", values, "--loglevel", "WARNING", conf=a.celery_conf, wait=False)
    n = len(batch.events)
    done_at, sent = wait_for_deliveries(b, n, base, dispatch=a.dispatch == "bench")
    after = b.usage()
    ended = done_at if done_at is not None else time.time()
    received = b.receiver_stats().get(batch.path, {})
    first = float(received.get("first") or began)
    counters = b.rt.store.counters()
    changed = {k: counters.get(k, 0) - counters0.get(k, 0) for k in (SUCCEEDED, *UNFINISHED)}
    default = " (default)" if cap == DEFAULT_CAP else ""
    info = {
        "short": f"watcher cap {cap}", "cap": cap, "path": batch.path, "counters": changed,
        "tasks_sent": sent if a.dispatch == "bench" else None,
        "first_post_after": first - began if received else None,
    }  # fmt: skip
    label = f"watcher, {a.pool} x{a.concurrency}, in-flight cap {cap}{default}"
    done = counters.get(SUCCEEDED, 0) - base
    return Run(label, "watcher", n, done, ended - first, before.to(after), info)


# --- the trace --------------------------------------------------------------------------------

_MONITOR_LINE = re.compile(r"^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


def classify(command: str, args: list[str]) -> str:
    """What a command is for, told by its key."""
    if command in ("MULTI", "EXEC"):
        return "MULTI/EXEC markers"
    if command == "PUBLISH":
        return "celery task events (PUBLISH)" if "celeryev" in args[0] else "PUBLISH, other"
    key = args[0] if args else ""
    if command in ("EVALSHA", "EVAL"):
        key = args[2] if len(args) > 2 and args[1] != "0" else ""
    prefixes = {"_kombu.binding": "kombu exchange bindings (SMEMBERS)",
                "unacked": "kombu acks_late bookkeeping (unacked*)",
                "watcher.": f"broker queue ({command})"}  # fmt: skip
    for prefix, what in prefixes.items():
        if key.startswith(prefix):
            return what
    if not key.startswith("{"):
        return f"other ({command})"
    kind = key.split(":", 1)[1] if ":" in key else key
    part = kind.split(":", 1)[0]
    if kind.startswith("delivery:"):
        part = "delivery attempt log" if kind.endswith(":attempts") else "delivery hash"
    elif kind.startswith("sub:"):
        part = "in-flight slot" if kind.endswith(":inflight") else "subscription hash"
    elif kind.startswith("schedule:"):
        part = "delivery schedules"
    return f"watcher: {part} ({command})"


@dataclass
class Trace:
    n: int
    seconds: float
    tasks_sent: int
    by_category: Counter[tuple[str, str]]  # (owner, category) -> commands
    round_trips: Counter[str]  # owner -> round trips
    commands: Counter[str]  # owner -> commands (MULTI/EXEC included)
    lua: Counter[str]  # command -> count, executed inside Lua scripts
    unknown: set[str]


def parse_monitor(trace: Trace, text: str, owners: dict[int, str], counters_key: str) -> None:
    in_multi: set[str] = set()
    for line in text.splitlines():
        match = _MONITOR_LINE.match(line)
        args = _ARG.findall(match.group(2)) if match else []
        if match is None or not args:
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
        trace.commands[owner] += 1
        trace.by_category[(owner, classify(command, args))] += 1
        if command == "MULTI":
            in_multi.add(client)
            trace.round_trips[owner] += 1
        elif command in ("EXEC", "DISCARD"):
            in_multi.discard(client)
        elif client not in in_multi:
            trace.round_trips[owner] += 1


def client_ports(pids: Sequence[int], server_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to `server_port`."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if (target := os.readlink(fd)).startswith("socket:["):
                    inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if (
                len(cols) > 9
                and cols[9] in inodes
                and int(cols[2].rsplit(":")[1], 16) == server_port
            ):
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def run_trace(b: Bench, k: int) -> Trace:
    """K deliveries with `redis-cli monitor` attached; the worker is running and idle."""
    prepare_batch(b, "trace", k)
    log_path = b.stack.tmp / "monitor.log"
    command = ["redis-cli", "-h", "127.0.0.1", "-p", str(b.stack.redis.port), "monitor"]
    monitor = b.stack.spawn("monitor", command, {})
    h.wait_for("redis-cli monitor", lambda: log_path.read_text().startswith("OK"), 10, [monitor])
    base, began = b.counter(SUCCEEDED), time.perf_counter()
    done_at, sent = wait_for_deliveries(b, k, base, dispatch=True)
    seconds = time.perf_counter() - began
    time.sleep(0.3)  # the last acknowledgements and task events
    worker = next(c for c in b.stack.children if c.name == "worker")
    port = b.stack.redis.port
    owners = dict.fromkeys(client_ports(h.group_pids(h.pid_of(worker)), port), "worker")
    owners.update(dict.fromkeys(client_ports([os.getpid()], port), "bench"))
    b.stack.stop_children("monitor")
    if done_at is None:
        raise RuntimeError(f"trace: {k} deliveries did not finish before the deadline")
    trace = Trace(k, seconds, sent, Counter(), Counter(), Counter(), Counter(), set())
    parse_monitor(trace, log_path.read_text(errors="replace"), owners, b.rt.store.keys.counters)
    return trace


# --- report -----------------------------------------------------------------------------------


def throughput_table(a: Any, runs: list[Run]) -> None:
    plains = [r for r in runs if r.kind == "plain"]
    one, many = plains[0].rate, plains[-1].rate
    rows = [
        [str(r.n), f"{a.pool} / {a.concurrency}", str(r.info["cap"]), fmt(r.rate), fmt(one),
         fmt(many), f"{r.rate / many:.2f}" if r.rate and many else "-",
         f"{r.rate / one:.2f}" if r.rate and one else "-"]
        for r in runs if r.kind == "watcher"
    ]  # fmt: skip
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
        total = None if any(x is None for x in parts) else sum(x or 0.0 for x in parts)
        busy = 100 * total / (run.seconds * nproc) if total and run.seconds else None
        rows.append([
            run.label, f"{run.done}/{run.n}", fmt(run.seconds, 2), fmt(run.rate),
            fmt(h.per(run.seconds, run.done, 1000), 3),
            fmt(run.ms(worker), 3) if run.kind == "watcher" else "-", fmt(run.ms(d.bench), 3),
            fmt(run.ms(d.redis), 3), fmt(run.ms(d.groups.get("receiver")), 3),
            fmt(run.ms(total), 3), fmt(busy), fmt(h.per(d.total_commands, run.done), 1),
            fmt(h.per(d.total_usec, run.done), 1),
        ])  # fmt: skip
    heads = "run|done|seconds|per s|wall ms/item|worker|bench|redis|receiver|CPU total|"
    heads += f"% of {nproc} CPUs|Redis cmds/item|Redis usec/item"
    h.print_table(
        "All runs: wall time and CPU per item (CPU ms per delivery/post; `bench` = this "
        "process: the plain loops, the direct threads, or the dispatcher + counter polling)",
        heads.split("|"), rows,
    )  # fmt: skip


def commands_table(runs: list[Run], batches: list[Batch]) -> None:
    columns = [(r.info["short"], r.delta, r.done) for r in runs if r.kind != "plain" and r.done]
    if batches:
        first = batches[0]
        columns.append((f"fan-out ({first.subscriptions} subs)", first.fan_out, len(first.events)))
    names: dict[str, float] = {}
    for _, delta, n in columns:
        for name, (calls, _) in delta.commands.items():
            names[name] = max(names.get(name, 0.0), calls / max(n, 1))

    def cell(calls: int, usec: int, n: int) -> str:
        return f"{calls / n:.2f} ({usec / n:.0f}us)" if calls else "-"

    rows = [
        [name, *(cell(*d.commands.get(name, (0, 0)), n) for _, d, n in columns)]
        for name in sorted(names, key=lambda c: -names[c])[:18]
    ]
    rows.append(["TOTAL", *(cell(d.total_commands, d.total_usec, n) for _, d, n in columns)])
    h.print_table(
        "Redis commands per item from INFO commandstats: calls (Redis-side usec) per delivery "
        "or per fanned-out event; broker traffic included, the bench's INFO/counter reads not",
        ["command", *(c[0] for c in columns)], rows,
    )  # fmt: skip


def trace_table(t: Trace) -> None:
    owners = ["worker", "bench", "other"]
    categories = {cat for _, cat in t.by_category}
    ordered = sorted(categories, key=lambda c: -sum(t.by_category[(o, c)] for o in owners))
    rows = [
        [cat, *(fmt(t.by_category[(o, cat)] / t.n, 2) if t.by_category[(o, cat)] else "-"
                for o in owners)]
        for cat in ordered
    ]  # fmt: skip
    rows.append(["TOTAL commands", *(fmt(t.commands[o] / t.n, 2) for o in owners)])
    rows.append(["ROUND TRIPS", *(fmt(t.round_trips[o] / t.n, 2) for o in owners)])
    h.print_table(
        f"Trace: Redis commands per delivery by purpose and client, from `redis-cli monitor` "
        f"over {t.n} deliveries ({t.tasks_sent} tasks sent, {t.seconds:.2f}s; bench = the "
        "dispatcher here; a MULTI..EXEC block is one round trip)",
        ["purpose (command)", *owners], rows,
    )  # fmt: skip
    inside = ", ".join(f"{c} {v / t.n:.2f}" for c, v in t.lua.most_common())
    print(f"  inside Lua scripts, per delivery: {inside or '-'}")
    if t.unknown:
        print(f"  clients not attributed (closed or foreign connections): {len(t.unknown)}")
    print()


def breakdown(a: Any, runs: list[Run], trace: Trace | None) -> None:
    """CPU per delivery, layer by layer: a plain post, + the watcher's bookkeeping, + Celery."""
    plain = [r for r in runs if r.kind == "plain"][-1]
    direct = next((r for r in runs if r.kind == "direct"), None)
    watcher = next((r for r in runs if r.kind == "watcher"), None)
    if watcher is None or watcher.delta.groups.get("worker") is None:
        return
    post = plain.ms(plain.delta.bench) or 0.0
    worker = watcher.ms(watcher.delta.groups["worker"]) or 0.0
    rate = watcher.rate or 0
    print(
        f"Where the time goes (CPU ms per delivery, main runs; one worker process at "
        f"{rate:,.0f}/s x {worker:.2f} ms = {rate * worker / 10:.0f}% of a CPU)"
    )

    def line(label: str, value: float, note: str = "", sign: str = "") -> None:
        print(f"  {label:<58} {value:{sign}7.3f}{note}")

    line(f"a plain post (requests, signing: {plain.info['short']})", post)
    if direct is not None and direct.done:
        bookkeeping = direct.ms(direct.delta.bench) or 0.0
        cmds = direct.delta.total_commands / direct.done
        celery_cmds = watcher.delta.total_commands / watcher.done - cmds
        note = "  ({:+.1f} Redis commands per delivery)"
        line(f"+ watcher bookkeeping ({direct.info['short']})", bookkeeping - post,
             note.format(cmds).replace("+", "", 1), "+")  # fmt: skip
        line("+ Celery/kombu in the worker (worker - direct)", worker - bookkeeping,
             note.format(celery_cmds), "+")  # fmt: skip
    line(f"= the worker process ({watcher.info['short']})", worker)
    what = "dispatcher (claim + apply_async) + counter polling, bench"
    if a.dispatch != "bench":
        what = "counter polling, bench (dispatch ticks: in the worker)"
    line(what, watcher.ms(watcher.delta.bench) or 0.0)
    line("redis-server", watcher.ms(watcher.delta.redis) or 0.0)
    if trace is not None:
        print(
            f"  Redis round trips per delivery (trace): worker "
            f"{trace.round_trips['worker'] / trace.n:.1f}, dispatcher "
            f"{trace.round_trips['bench'] / trace.n:.1f}; a plain post makes none"
        )
    print()


def verify_sample(received: dict[str, Any], secret: str) -> str:
    sample = received.get("sample")
    if not sample:
        return "no sample"
    try:
        verify(secret, sample["headers"], sample["body"].encode(), tolerance=3600)
    except WebhookVerificationError as exc:
        return f"INVALID ({exc})"
    return "signature ok"


def check_runs(b: Bench, runs: list[Run], batches: dict[str, Batch]) -> list[str]:
    """Exactly once at the receiver for every delivery; returns the problems found."""
    stats, problems = b.receiver_stats(), []
    print("Checks (receiver counts per path; signature of the first request verified)")
    for run in runs:
        i = run.info
        got = stats.get(i["path"], {})
        total, distinct = int(got.get("total", 0)), int(got.get("distinct", 0))
        secret = next((x.secret for x in batches.values() if x.path == i["path"]), None)
        extra = ""
        if run.kind == "watcher":
            extra = "; counters " + ", ".join(f"{k}=+{v}" for k, v in i["counters"].items())
            if i["tasks_sent"] is not None:
                extra += (f"; deliver tasks sent {i['tasks_sent']} ({i['tasks_sent'] - run.n} "
                          "re-sent after 'postponed': no free slot)")  # fmt: skip
            if i["first_post_after"] is not None:
                extra += f"; first POST {i['first_post_after'] * 1000:.0f} ms after dispatch began"
        if run.kind == "direct":
            extra = "; outcomes " + ", ".join(f"{k}={v}" for k, v in sorted(i["outcomes"].items()))
        signature = verify_sample(got, secret or batches["main"].secret)
        print(
            f"  {run.label}: {i['path']} total={total} distinct webhook-ids={distinct} "
            f"(expected {run.n}), errors={i.get('errors', 0)}, {signature}{extra}"
        )
        if run.kind != "plain" and (total != run.n or distinct != run.n or run.done != run.n):
            problems.append(f"{run.label}: {total} requests, {distinct} distinct, {run.done} done")
        if run.kind == "plain" and (run.done != run.n or total != run.n):
            problems.append(f"{run.label}: {run.done} ok of {run.n}, receiver saw {total}")
    print()
    return problems


def report(b: Bench, runs: list[Run], batches: dict[str, Batch], trace: Trace | None) -> list[str]:
    a = b.a
    h.header("delivery throughput benchmark", b.stack)
    sizes = [len(body) for _, body in batches["main"].events]
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
    commands_table(runs, list(batches.values()))
    if trace is not None:
        trace_table(trace)
    breakdown(a, runs, trace)
    for x in batches.values():
        n = len(x.events)
        print(
            f"fan-out of '{x.label}' (before its run, not timed in it): {n} events in "
            f"{x.fan_out_seconds:.2f}s ({n / x.fan_out_seconds:,.0f}/s) with {x.subscriptions} "
            f"enabled subscriptions: {x.fan_out.total_commands / n:.1f} Redis commands per event"
        )
    print()
    return check_runs(b, runs, batches)


# --- main -------------------------------------------------------------------------------------


def execute(b: Bench, batches: dict[str, Batch]) -> tuple[list[Run], Trace | None]:
    a, runs, trace = b.a, [], None
    n = a.deliveries
    scenarios = [("main", a.cap, a.trace)] + [("defaultcap", DEFAULT_CAP, 0)] * a.default_cap_run
    for label, cap, traced in scenarios:
        h.log(f"{label}: adopting {n} completed payments and fanning them out")
        batch = batches[label] = prepare_batch(b, label, n)
        if label == "main":
            for threads in dict.fromkeys((1, a.concurrency)):
                h.log(f"plain loop, {threads} thread(s): {n} posts")
                runs.append(run_plain(b, batch, threads))
        h.log(f"{label}: starting the worker (cap {cap})")
        b.start_celery(label, cap)
        try:
            h.log(f"{label}: delivering {n}")
            runs.append(run_watcher(b, batch, label, cap))
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
    watchers = [r for r in runs if r.kind == "watcher"]
    plains = [r for r in runs if r.kind == "plain"]
    direct = next((r for r in runs if r.kind == "direct"), None)
    main = watchers[0] if watchers else None
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
    a = parse_args(argv)
    started = time.time()

    def body(stack: Stack) -> int:
        h.log("starting redis-server and the receiver")
        b, batches = Bench(stack, a), {}
        runs, trace = execute(b, batches)
        problems = report(b, runs, batches, trace)
        print(f"total wall time: {time.time() - started:.1f}s")
        return h.finish(a, headline(a, runs, problems), problems)

    return h.run_in_stack("deliveries", a, body)


if __name__ == "__main__":
    sys.exit(main())
