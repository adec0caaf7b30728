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

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import requests

from bench.common import (
    PROJECT_ROOT,
    Child,
    child_env,
    exit_on_sigterm,
    fmt,
    group_cpu,
    load_average,
    log,
    log_tails,
    machine_line,
    print_table,
    remove_or_keep,
    wait_for,
    write_json,
)
from watcher.delivery.attempts import USER_AGENT, attempt_delivery
from watcher.delivery.signing import WebhookVerificationError, verify, webhook_headers
from watcher.logging import configure_logging
from watcher.redis_server import RedisServer
from watcher.runtime import Runtime
from watcher.settings import Settings, load_settings
from watcher.voltage.models import Payment

DEFAULT_CAP = int(Settings.model_fields["watcher_webhook_max_in_flight"].default)
POLL_EVERY = 0.005  # seconds between reads of the succeeded counter while waiting
SUCCEEDED = "deliveries:succeeded"
UNFINISHED = ("deliveries:failed", "deliveries:dead")


# --- the receiver (runs in its own process) ---------------------------------------------------


@dataclass
class _PathStats:
    first: float
    last: float = 0.0
    total: int = 0
    ids: set[str] = field(default_factory=set)
    sample: dict[str, Any] | None = None


_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # C threads connecting at once must not overflow the backlog
    daemon_threads = True


def serve_receiver(port: int) -> None:
    """The webhook receiver: POST anything -> 200 "ok"; GET /count -> per-path JSON counts.

    One thread per connection (keep-alive), the whole answer in one write with TCP_NODELAY
    (two writes would wait for the client's delayed ACK: ~40 ms per request)."""
    stats: dict[str, _PathStats] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            msg_id = self.headers.get("webhook-id") or ""
            now = time.time()
            with lock:
                entry = stats.get(self.path)
                if entry is None:
                    entry = stats[self.path] = _PathStats(first=now)
                    entry.sample = {
                        "headers": dict(self.headers.items()),
                        "body": body.decode("utf-8", errors="replace"),
                    }
                entry.total += 1
                entry.ids.add(msg_id)
                entry.last = now
            self.wfile.write(_OK)

        def do_GET(self) -> None:
            with lock:
                answer = {
                    path: {
                        "total": s.total,
                        "distinct": len(s.ids),
                        "first": s.first,
                        "last": s.last,
                        "sample": s.sample,
                    }
                    for path, s in stats.items()
                }
            body = json.dumps(answer).encode()
            head = (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            )
            self.wfile.write(head % len(body) + body)

    with _Server(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


# --- CPU and Redis accounting -----------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def client_ports(pids: Sequence[int], server_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to `server_port`."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[9] in inodes:
                    local, remote = cols[1], cols[2]
                    if int(remote.rsplit(":", 1)[1], 16) == server_port:
                        ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@dataclass(frozen=True)
class Usage:
    """A snapshot of the clocks and counters a run is measured with."""

    bench_cpu: float
    redis_cpu: float
    worker_cpu: float | None
    receiver_cpu: float | None
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)
    polls: int  # counter reads this process made so far (HGETs to leave out)
    infos: int  # INFO calls this process made so far


@dataclass(frozen=True)
class Delta:
    bench_cpu: float
    redis_cpu: float
    worker_cpu: float | None
    receiver_cpu: float | None
    commands: dict[str, tuple[int, int]]

    @classmethod
    def between(cls, a: Usage, b: Usage) -> Delta:
        commands = {}
        for name, (after_calls, after_usec) in b.commands.items():
            before_calls, before_usec = a.commands.get(name, (0, 0))
            calls = after_calls - before_calls
            usec = after_usec - before_usec
            if name == "hget":  # the bench's own waiting
                calls -= b.polls - a.polls
            if name == "info":  # the bench's own snapshots
                calls -= b.infos - a.infos
            if calls > 0:
                commands[name] = (calls, max(usec, 0))
        return cls(
            bench_cpu=b.bench_cpu - a.bench_cpu,
            redis_cpu=b.redis_cpu - a.redis_cpu,
            worker_cpu=None
            if a.worker_cpu is None or b.worker_cpu is None
            else b.worker_cpu - a.worker_cpu,
            receiver_cpu=None
            if a.receiver_cpu is None or b.receiver_cpu is None
            else b.receiver_cpu - a.receiver_cpu,
            commands=commands,
        )

    @property
    def total_commands(self) -> int:
        return sum(calls for calls, _ in self.commands.values())

    @property
    def total_usec(self) -> int:
        return sum(usec for _, usec in self.commands.values())


# --- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    deliveries: int
    pool: str
    concurrency: int
    cap: int
    default_cap_run: bool
    dispatch: str
    dispatch_interval: float
    trace: int
    direct: bool
    deadline: float
    keep: bool
    celery_conf: dict[str, Any]
    json_path: Path | None


@dataclass(frozen=True)
class Scenario:
    label: str
    cap: int
    trace: int


# --- the stack --------------------------------------------------------------------------------


class Stack:
    """redis-server, the receiver process, and (per run) one Celery worker (+ beat)."""

    def __init__(self, params: Params, tmp: Path) -> None:
        self.params = params
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis")
        self.receiver: Child | None = None
        self.receiver_port = 0
        self.worker: Child | None = None
        self.beat: Child | None = None
        self.monitor: Child | None = None
        self.values: dict[str, str] = {}
        self.runtime: Runtime | None = None
        self.http = requests.Session()
        self.polls = 0
        self.infos = 0

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def receiver_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.receiver_port}{path}"

    def start(self) -> None:
        self.redis.start()
        from watcher.redis_server import free_port

        self.receiver_port = free_port()
        self.receiver = Child(
            "receiver",
            [
                sys.executable,
                "-c",
                "from bench.deliveries import serve_receiver; "
                f"serve_receiver({self.receiver_port})",
            ],
            {**child_env({}), "PYTHONPATH": str(PROJECT_ROOT)},
            self.tmp,
        ).start()
        wait_for(
            "the receiver",
            lambda: self.http.get(self.receiver_url("/count"), timeout=1).ok,
            timeout=30,
            children=[self.receiver],
        )
        data_dir = self.tmp / "data"
        data_dir.mkdir(exist_ok=True)
        self.values = {
            "WATCHER_REDIS_URL": self.redis.url,
            "WATCHER_DATA_DIR": str(data_dir),
            "WATCHER_WEBHOOK_ALLOW_PRIVATE": "true",
            "WATCHER_LOG_LEVEL": "WARNING",
            "WATCHER_LOG_FORMAT": "json",
            "WATCHER_DISPATCH_INTERVAL": f"{self.params.dispatch_interval:g}",
            "WATCHER_SWEEP_INTERVAL": "0",  # no Voltage here: never sweep it
            "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(self.params.cap),
            "VOLTAGE_API_URL": "http://127.0.0.1:9/v1",  # never called
            "VOLTAGE_API_KEY": "bench-dummy-key-0123456789",
            "VOLTAGE_ORGANIZATION_ID": "org-bench",
            "VOLTAGE_ENVIRONMENT_ID": "env-bench",
            "VOLTAGE_WALLET_ID": "wallet-bench",
        }
        # watcher.tasks (imported lazily) builds its Celery app from the environment at import.
        os.environ.update(self.values)
        if self.params.celery_conf:
            from watcher.celery import app

            app.conf.update(self.params.celery_conf)  # this process dispatches too
        settings = load_settings(**{k.lower(): v for k, v in self.values.items()})
        configure_logging(settings)
        self.runtime = Runtime.from_settings(settings)

    # --- celery ---------------------------------------------------------------------------------
    def celery(self, *args: str) -> list[str]:
        """`celery -A watcher ARGS`, or the same through `app.worker_main`/`app.start` after
        `app.conf.update(--celery-conf)` when there are overrides (watcher's code unchanged)."""
        overrides = self.params.celery_conf
        if not overrides:
            return [sys.executable, "-m", "celery", "-A", "watcher", *args]
        main = "worker_main" if args[0] == "worker" else "start"
        code = (
            "import json, sys; from watcher.celery import app; "
            f"app.conf.update(json.loads(sys.argv[1])); app.{main}(sys.argv[2:])"
        )
        return [sys.executable, "-c", code, json.dumps(overrides), *args]

    def start_worker(self, scenario: Scenario) -> None:
        env = child_env({**self.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(scenario.cap)})
        self.worker = Child(
            f"worker-{scenario.label}",
            self.celery(
                "worker",
                "--pool",
                self.params.pool,
                "--concurrency",
                str(self.params.concurrency),
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"bench-{scenario.label}@%h",
            ),
            env,
            self.tmp,
        ).start()
        # Readiness: a dispatch_polls task (nothing to poll here) bumps `dispatch_ticks`.
        from watcher.celery import QUEUE_CONTROL
        from watcher.tasks import dispatch_polls

        before = self.counter("dispatch_ticks")
        dispatch_polls.apply_async(queue=QUEUE_CONTROL, expires=120)
        worker = self.worker
        wait_for(
            "the worker to run a ping task",
            lambda: self.counter("dispatch_ticks") > before,
            timeout=90,
            children=[worker],
        )

    def start_beat(self, scenario: Scenario) -> None:
        env = child_env({**self.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(scenario.cap)})
        self.beat = Child(
            f"beat-{scenario.label}",
            self.celery("beat", "-s", str(self.tmp / f"celerybeat-schedule-{scenario.label}")),
            env,
            self.tmp,
        ).start()

    def stop_celery(self) -> None:
        for child in (self.beat, self.worker):
            if child is not None:
                child.stop()
        self.beat = self.worker = None

    def stop(self) -> None:
        self.stop_celery()
        for child in (self.monitor, self.receiver):
            if child is not None:
                child.stop()
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                self.runtime.redis.close()
        self.redis.stop()
        self.http.close()

    def children(self) -> list[Child]:
        return [c for c in (self.receiver, self.worker, self.beat) if c is not None]

    # --- reading --------------------------------------------------------------------------------
    def counter(self, name: str) -> int:
        self.polls += 1
        value = self.rt.redis.hget(self.rt.store.keys.counters, name)
        return int(cast(str, value)) if value else 0

    def counters(self) -> dict[str, int]:
        return self.rt.store.counters()

    def receiver_stats(self) -> dict[str, Any]:
        response = self.http.get(self.receiver_url("/count"), timeout=10)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def usage(self) -> Usage:
        r = self.rt.redis
        cpu = r.info("cpu")
        raw = r.info("commandstats")
        self.infos += 2
        commands = {
            name.removeprefix("cmdstat_"): (int(v.get("calls", 0)), int(v.get("usec", 0)))
            for name, v in raw.items()
            if isinstance(v, dict)
        }
        pid = self.worker.process.pid if self.worker and self.worker.process else None
        rpid = self.receiver.process.pid if self.receiver and self.receiver.process else None
        return Usage(
            bench_cpu=time.process_time(),
            redis_cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            worker_cpu=group_cpu(pid),
            receiver_cpu=group_cpu(rpid),
            commands=commands,
            polls=self.polls,
            infos=self.infos,
        )


# --- batches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    event_id: str
    body: bytes


@dataclass
class Batch:
    label: str
    path: str
    subscription_id: str
    secret: str
    events: list[Event]
    delivery_ids: list[str]
    subscriptions: int
    fan_out_seconds: float
    fan_out: Delta


def fake_payment(wallet: str, index: int, now: float) -> dict[str, Any]:
    """A completed receive shaped like Voltage's answer (~0.6 kB once in an event body)."""
    at = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": str(uuid.uuid4()),
        "status": "completed",
        "direction": "receive",
        "type": "bolt11",
        "currency": "btc",
        "wallet_id": wallet,
        "organization_id": "org-bench",
        "environment_id": "env-bench",
        "created_at": at,
        "updated_at": at,
        "requested_amount": {"currency": "btc", "amount": 150_000 + index, "unit": "msat"},
        "metadata": {"order_id": f"order-{index:06d}", "source": "bench.deliveries"},
        "data": {"amount_msats": 150_000 + index, "memo": f"bench delivery {index}"},
    }


def prepare_batch(stack: Stack, label: str, n: int, deadline: float) -> Batch:
    """A subscription of its own (path and wallet filter), N outbox events, all fanned out."""
    rt = stack.rt
    keys = rt.store.keys
    path = f"/hook/{label}"
    wallet = f"wallet-bench-{label}"
    sub, secret = rt.subscriptions.create(
        url=stack.receiver_url(path), wallet_id=wallet, description=f"bench {label}"
    )
    newest = cast(list[tuple[str, Any]], rt.redis.xrevrange(keys.outbox, count=1))
    last_id = newest[0][0] if newest else "0-0"
    now = time.time()
    for index in range(n):
        rt.store.adopt(
            Payment.from_api(fake_payment(wallet, index, now)),
            source="watched",
            now=now,
            first_poll_at=0,
        )
    events: list[Event] = []
    cursor = f"({last_id}"
    while len(events) < n:
        chunk = cast(
            list[tuple[str, dict[str, str]]],
            rt.redis.xrange(keys.outbox, min=cursor, max="+", count=1000),
        )
        if not chunk:
            break
        events.extend(Event(f["event_id"], f["body"].encode()) for _, f in chunk)
        cursor = f"({chunk[-1][0]}"
    if len(events) != n:
        raise RuntimeError(f"{label}: expected {n} outbox events, found {len(events)}")

    consumer = f"bench-{os.getpid()}"
    before = stack.usage()
    began = time.perf_counter()
    made = 0
    stop_at = time.monotonic() + deadline
    while made < n:
        if time.monotonic() > stop_at:
            raise RuntimeError(f"{label}: fan-out made {made}/{n} deliveries before the deadline")
        got = rt.deliveries.fan_out_new(consumer, time.time(), count=500)
        made += got
        if not got:
            time.sleep(0.01)
    seconds = time.perf_counter() - began
    fan_out = Delta.between(before, stack.usage())
    ids = rt.deliveries.list_ids(subscription_id=sub.id, newest_first=False, limit=n + 1)
    if len(ids) != n:
        raise RuntimeError(f"{label}: expected {n} deliveries, found {len(ids)}")
    subscriptions = len(rt.subscriptions.all_enabled())
    return Batch(label, path, sub.id, secret, events, ids, subscriptions, seconds, fan_out)


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    short: str  # a column header
    kind: str  # watcher | plain | direct
    n: int
    done: int
    seconds: float
    delta: Delta
    path: str
    received: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    tasks_sent: int | None = None
    first_post_after: float | None = None  # dispatch start -> first POST at the receiver
    outcomes: Counter[str] = field(default_factory=Counter)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.done / self.seconds if self.seconds > 0 else None

    def per_item(self, value: float | None) -> float | None:
        """CPU seconds -> CPU milliseconds per item."""
        return None if value is None or not self.done else value * 1000 / self.done


def _post_all(
    url: str, events: Sequence[Event], secret: str, stop_at: float, tally: list[int]
) -> None:
    """POST each body, signed now, with one Session; tally = [ok, errors]."""
    ok = errors = 0
    with requests.Session() as session:
        for event in events:
            if time.monotonic() > stop_at:
                break
            headers = webhook_headers(
                msg_id=event.event_id,
                timestamp=int(time.time()),
                body=event.body,
                secrets=[secret],
                user_agent=USER_AGENT,
            )
            try:
                response = session.post(url, data=event.body, headers=headers, timeout=(5, 15))
                _ = response.content
            except requests.RequestException:
                errors += 1
                continue
            if response.status_code == 200:
                ok += 1
            else:
                errors += 1
    tally[0] += ok
    tally[1] += errors


def run_plain(stack: Stack, batch: Batch, threads: int, deadline: float) -> Run:
    path = f"/plain/{threads}"
    url = stack.receiver_url(path)
    slices = [batch.events[i::threads] for i in range(threads)]
    tallies = [[0, 0] for _ in range(threads)]
    stop_at = time.monotonic() + deadline
    before = stack.usage()
    began = time.perf_counter()
    if threads == 1:
        _post_all(url, slices[0], batch.secret, stop_at, tallies[0])
    else:
        workers = [
            threading.Thread(
                target=_post_all,
                args=(url, slices[i], batch.secret, stop_at, tallies[i]),
                name=f"plain-{i}",
            )
            for i in range(threads)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(max(1.0, stop_at - time.monotonic() + 20))
    seconds = time.perf_counter() - began
    delta = Delta.between(before, stack.usage())
    done = sum(t[0] for t in tallies)
    errors = sum(t[1] for t in tallies)
    label = f"plain requests loop, {threads} thread{'s' * (threads > 1)}"
    short = f"plain x{threads}"
    return Run(label, short, "plain", len(batch.events), done, seconds, delta, path, errors=errors)


def run_direct(stack: Stack, batch: Batch, threads: int, deadline: float) -> Run:
    """attempt_delivery from `threads` threads of this process: the watcher minus Celery."""
    rt = stack.rt
    session = rt.webhook_session  # one per process, shared by its threads, as in the worker
    policy = rt.delivery_policy
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline

    def work(ids: Sequence[str]) -> None:
        for delivery_id in ids:
            while time.monotonic() < stop_at:
                outcome = attempt_delivery(rt.deliveries, session, policy, delivery_id, time.time())
                with lock:
                    outcomes[outcome] += 1
                if outcome != "postponed":
                    break
                time.sleep(0.001)

    slices = [batch.delivery_ids[i::threads] for i in range(threads)]
    before = stack.usage()
    began = time.perf_counter()
    workers = [threading.Thread(target=work, args=(s,), name="direct") for s in slices]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(max(1.0, stop_at - time.monotonic() + 20))
    seconds = time.perf_counter() - began
    delta = Delta.between(before, stack.usage())
    label = f"watcher attempt_delivery, no Celery, {threads} threads"
    return Run(
        label,
        f"direct x{threads}, no Celery",
        "direct",
        len(batch.delivery_ids),
        outcomes["succeeded"],
        seconds,
        delta,
        batch.path,
        outcomes=outcomes,
    )


def wait_for_deliveries(
    stack: Stack, n: int, base: int, deadline: float, *, dispatch: bool
) -> tuple[float | None, int]:
    """Dispatch (if asked) every interval until the succeeded counter rose by n; returns the
    time it did (None at the deadline) and how many deliver tasks this process sent."""
    from watcher.tasks import dispatch_due_deliveries_now

    rt = stack.rt
    interval = stack.params.dispatch_interval
    stop_at = time.monotonic() + deadline
    next_dispatch = time.monotonic()
    sent = 0
    while time.monotonic() < stop_at:
        if dispatch and time.monotonic() >= next_dispatch:
            sent += dispatch_due_deliveries_now(rt)
            next_dispatch = time.monotonic() + interval
        if stack.counter(SUCCEEDED) - base >= n:
            return time.time(), sent
        for child in stack.children():
            if not child.alive:
                raise RuntimeError(f"{child.name} exited during the run:\n{child.tail()}")
        time.sleep(POLL_EVERY)
    return None, sent


def run_watcher(stack: Stack, batch: Batch, scenario: Scenario) -> Run:
    params = stack.params
    before_counters = stack.counters()
    base = before_counters.get(SUCCEEDED, 0)
    before = stack.usage()
    began = time.time()
    if params.dispatch == "beat":
        stack.start_beat(scenario)
    done_at, sent = wait_for_deliveries(
        stack, len(batch.events), base, params.deadline, dispatch=params.dispatch == "bench"
    )
    after = stack.usage()
    ended = done_at if done_at is not None else time.time()
    received = stack.receiver_stats().get(batch.path, {})
    first = float(received.get("first") or began)
    counters = stack.counters()
    done = counters.get(SUCCEEDED, 0) - base
    changed = {
        name: counters.get(name, 0) - before_counters.get(name, 0)
        for name in (SUCCEEDED, *UNFINISHED)
    }
    label = (
        f"watcher, {params.pool} x{params.concurrency}, in-flight cap {scenario.cap}"
        f"{' (default)' if scenario.cap == DEFAULT_CAP else ''}"
    )
    return Run(
        label,
        f"watcher cap {scenario.cap}",
        "watcher",
        len(batch.events),
        done,
        ended - first,
        Delta.between(before, after),
        batch.path,
        received=received,
        tasks_sent=sent if params.dispatch == "bench" else None,
        first_post_after=first - began if received else None,
        counters=changed,
    )


# --- the trace --------------------------------------------------------------------------------

_MONITOR_LINE = re.compile(r"^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


def classify(command: str, args: list[str]) -> str:
    """What a command is for, told by its key."""
    if command in ("MULTI", "EXEC"):
        return "MULTI/EXEC markers"
    if command == "PUBLISH":
        channel = args[0] if args else ""
        return "celery task events (PUBLISH)" if "celeryev" in channel else "PUBLISH, other"
    key = args[0] if args else ""
    if command in ("EVALSHA", "EVAL"):
        key = args[2] if len(args) > 2 and args[1] != "0" else ""
    if key.startswith("_kombu.binding"):
        return "kombu exchange bindings (SMEMBERS)"
    if key.startswith("unacked"):
        return "kombu acks_late bookkeeping (unacked*)"
    if key.startswith("watcher."):
        return f"broker queue ({command})"
    if key.startswith("{"):
        kind = key.split(":", 1)[1] if ":" in key else key
        if kind.startswith("delivery:"):
            part = "delivery attempt log" if kind.endswith(":attempts") else "delivery hash"
        elif kind.startswith("sub:"):
            part = "in-flight slot" if kind.endswith(":inflight") else "subscription hash"
        elif kind.startswith("schedule:"):
            part = "delivery schedules"
        else:
            part = kind.split(":", 1)[0]
        return f"watcher: {part} ({command})"
    return f"other ({command})"


@dataclass
class Trace:
    n: int
    seconds: float
    tasks_sent: int
    by_category: dict[tuple[str, str], int]  # (owner, category) -> commands
    round_trips: Counter[str]  # owner -> round trips
    commands: Counter[str]  # owner -> commands (MULTI/EXEC included)
    lua: Counter[str]  # command -> count, executed inside Lua scripts
    unknown_clients: int


def parse_monitor(
    text: str, owners: dict[int, str], counters_key: str, bench_owner: str = "bench"
) -> tuple[dict[tuple[str, str], int], Counter[str], Counter[str], Counter[str], int]:
    by_category: Counter[tuple[str, str]] = Counter()
    round_trips: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    lua: Counter[str] = Counter()
    in_multi: set[str] = set()
    unknown: set[str] = set()
    for line in text.splitlines():
        match = _MONITOR_LINE.match(line)
        if match is None:
            continue
        client, rest = match.groups()
        args = _ARG.findall(rest)
        if not args:
            continue
        command, args = args[0].upper(), args[1:]
        if client == "lua":
            lua[command] += 1
            continue
        port = client.rsplit(":", 1)[-1]
        owner = owners.get(int(port), "other") if port.isdigit() else "other"
        if owner == "other":
            unknown.add(client)
        if owner == bench_owner and command == "HGET" and args[:1] == [counters_key]:
            continue  # the bench waiting for the counter
        if command == "MONITOR":
            continue
        commands[owner] += 1
        by_category[(owner, classify(command, args))] += 1
        if command == "MULTI":
            in_multi.add(client)
            round_trips[owner] += 1
        elif command in ("EXEC", "DISCARD"):
            in_multi.discard(client)
        elif client not in in_multi:
            round_trips[owner] += 1
    return dict(by_category), round_trips, commands, lua, len(unknown)


def run_trace(stack: Stack, k: int) -> Trace:
    """K deliveries with `redis-cli monitor` attached; the worker is running and idle."""
    rt = stack.rt
    prepare_batch(stack, "trace", k, stack.params.deadline)
    log_path = stack.tmp / "monitor.log"
    stack.monitor = Child(
        "monitor",
        ["redis-cli", "-h", "127.0.0.1", "-p", str(stack.redis.port), "monitor"],
        child_env({}),
        stack.tmp,
    ).start()
    wait_for(
        "redis-cli monitor",
        lambda: log_path.exists() and log_path.read_text().startswith("OK"),
        timeout=10,
        children=[stack.monitor],
    )
    base = stack.counter(SUCCEEDED)
    began = time.perf_counter()
    done_at, sent = wait_for_deliveries(stack, k, base, stack.params.deadline, dispatch=True)
    seconds = time.perf_counter() - began
    time.sleep(0.3)  # the last acknowledgements and task events
    owners: dict[int, str] = {}
    worker = stack.worker
    if worker is not None and worker.process is not None:
        for port in client_ports(group_pids(worker.process.pid), stack.redis.port):
            owners[port] = "worker"
    for port in client_ports([os.getpid()], stack.redis.port):
        owners[port] = "bench"
    stack.monitor.stop()
    stack.monitor = None
    if done_at is None:
        raise RuntimeError(f"trace: {k} deliveries did not finish before the deadline")
    text = log_path.read_text(errors="replace")
    by_category, round_trips, commands, lua, unknown = parse_monitor(
        text, owners, rt.store.keys.counters
    )
    return Trace(k, seconds, sent, by_category, round_trips, commands, lua, unknown)


# --- report -----------------------------------------------------------------------------------


def throughput_table(params: Params, runs: list[Run]) -> None:
    plains = [r for r in runs if r.kind == "plain"]
    one, many = plains[0], plains[-1]
    rows = []
    for run in (r for r in runs if r.kind == "watcher"):
        cap = run.label.rsplit("in-flight cap ", 1)[1]
        rows.append(
            [
                str(run.n),
                f"{params.pool} / {params.concurrency}",
                cap,
                fmt(run.rate),
                fmt(one.rate),
                fmt(many.rate),
                f"{run.rate / many.rate:.2f}" if run.rate and many.rate else "-",
                f"{run.rate / one.rate:.2f}" if run.rate and one.rate else "-",
            ]
        )
    print_table(
        "Throughput (watcher: exactly one `celery -A watcher worker` process)",
        [
            "N",
            "pool / concurrency",
            "in-flight cap",
            "watcher deliveries/s per worker process",
            "plain 1 thread /s",
            f"plain {params.concurrency} threads /s",
            f"ratio vs plain {params.concurrency}",
            "ratio vs plain 1",
        ],
        rows,
    )


def runs_table(params: Params, runs: list[Run]) -> None:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    rows = []
    for run in runs:
        d = run.delta
        parts = [d.worker_cpu if run.kind == "watcher" else 0.0, d.bench_cpu, d.redis_cpu]
        parts.append(d.receiver_cpu)
        total = None if any(p is None for p in parts) else sum(p or 0.0 for p in parts)
        rows.append(
            [
                run.label,
                f"{run.done}/{run.n}",
                fmt(run.seconds, 2),
                fmt(run.rate),
                fmt(run.seconds * 1000 / run.done if run.done else None, 3),
                fmt(run.per_item(parts[0]), 3) if run.kind == "watcher" else "-",
                fmt(run.per_item(d.bench_cpu), 3),
                fmt(run.per_item(d.redis_cpu), 3),
                fmt(run.per_item(d.receiver_cpu), 3),
                fmt(run.per_item(total), 3),
                fmt(100 * total / (run.seconds * nproc) if total and run.seconds else None),
                fmt(d.total_commands / run.done if run.done else None, 1),
                fmt(d.total_usec / run.done if run.done else None, 1),
            ]
        )
    print_table(
        "All runs: wall time and CPU per item (CPU ms per delivery/post; `bench` = this process: "
        "the plain loops, the direct threads, or the dispatcher + counter polling)",
        [
            "run",
            "done",
            "seconds",
            "per s",
            "wall ms/item",
            "worker",
            "bench",
            "redis",
            "receiver",
            "CPU total",
            f"% of {nproc} CPUs",
            "Redis cmds/item",
            "Redis usec/item",
        ],
        rows,
    )


def commands_table(runs: list[Run], batches: list[Batch]) -> None:
    columns = [(r.short, r.delta, r.done) for r in runs if r.kind != "plain" and r.done]
    if batches:
        first = batches[0]
        columns.append((f"fan-out ({first.subscriptions} subs)", first.fan_out, len(first.events)))
    names: dict[str, float] = {}
    for _, delta, n in columns:
        for name, (calls, _) in delta.commands.items():
            names[name] = max(names.get(name, 0.0), calls / max(n, 1))
    rows = []
    for name in sorted(names, key=lambda c: -names[c])[:18]:
        row = [name]
        for _, delta, n in columns:
            calls, usec = delta.commands.get(name, (0, 0))
            row.append(f"{calls / n:.2f} ({usec / n:.0f}us)" if calls else "-")
        rows.append(row)
    rows.append(
        ["TOTAL"]
        + [
            f"{delta.total_commands / n:.2f} ({delta.total_usec / n:.0f}us)"
            for _, delta, n in columns
        ]
    )
    print_table(
        "Redis commands per item from INFO commandstats: calls (Redis-side usec) per delivery "
        "or per fanned-out event; broker traffic included, the bench's INFO/counter reads not",
        ["command", *(c[0] for c in columns)],
        rows,
    )


def trace_table(trace: Trace) -> None:
    owners = ["worker", "bench", "other"]
    categories = sorted({cat for _, cat in trace.by_category})
    rows = []
    for cat in sorted(
        categories,
        key=lambda c: -sum(trace.by_category.get((o, c), 0) for o in owners),
    ):
        rows.append(
            [cat]
            + [
                fmt(trace.by_category.get((o, cat), 0) / trace.n, 2)
                if trace.by_category.get((o, cat))
                else "-"
                for o in owners
            ]
        )
    rows.append(["TOTAL commands"] + [fmt(trace.commands[o] / trace.n, 2) for o in owners])
    rows.append(["ROUND TRIPS"] + [fmt(trace.round_trips[o] / trace.n, 2) for o in owners])
    print_table(
        f"Trace: Redis commands per delivery by purpose and client, from `redis-cli monitor` "
        f"over {trace.n} deliveries ({trace.tasks_sent} tasks sent, {trace.seconds:.2f}s; "
        "bench = the dispatcher here; a MULTI..EXEC block is one round trip)",
        ["purpose (command)", "worker", "bench", "other"],
        rows,
    )
    inside = ", ".join(f"{c} {v / trace.n:.2f}" for c, v in trace.lua.most_common())
    print(f"  inside Lua scripts, per delivery: {inside or '-'}")
    if trace.unknown_clients:
        print(f"  clients not attributed (closed or foreign connections): {trace.unknown_clients}")
    print()


def breakdown(params: Params, runs: list[Run], trace: Trace | None) -> None:
    """CPU per delivery, layer by layer: a plain post, + the watcher's bookkeeping, + Celery."""
    plain = [r for r in runs if r.kind == "plain"][-1]
    direct = next((r for r in runs if r.kind == "direct"), None)
    watcher = next((r for r in runs if r.kind == "watcher"), None)
    if watcher is None or watcher.delta.worker_cpu is None:
        return
    post = plain.per_item(plain.delta.bench_cpu) or 0.0
    worker = watcher.per_item(watcher.delta.worker_cpu) or 0.0
    print(
        f"Where the time goes (CPU ms per delivery, main runs; one worker process at "
        f"{watcher.rate or 0:,.0f}/s x {worker:.2f} ms = {(watcher.rate or 0) * worker / 10:.0f}% "
        "of a CPU)"
    )
    print(f"  {'a plain post (requests, signing: ' + plain.short + ')':<58} {post:7.3f}")
    if direct is not None and direct.done:
        bookkeeping = direct.per_item(direct.delta.bench_cpu) or 0.0
        cmds = direct.delta.total_commands / direct.done
        print(
            f"  {'+ watcher bookkeeping (' + direct.short + ')':<58} "
            f"{bookkeeping - post:+7.3f}  ({cmds:.1f} Redis commands per delivery)"
        )
        celery_cmds = watcher.delta.total_commands / watcher.done - cmds
        print(
            f"  {'+ Celery/kombu in the worker (worker - direct)':<58} "
            f"{worker - bookkeeping:+7.3f}  ({celery_cmds:+.1f} Redis commands per delivery)"
        )
    print(f"  {'= the worker process (' + watcher.short + ')':<58} {worker:7.3f}")
    bench = watcher.per_item(watcher.delta.bench_cpu) or 0.0
    if params.dispatch == "bench":
        print(f"  {'dispatcher (claim + apply_async) + counter polling, bench':<58} {bench:7.3f}")
    else:
        print(f"  {'counter polling, bench (dispatch ticks: in the worker)':<58} {bench:7.3f}")
    redis_cpu = watcher.per_item(watcher.delta.redis_cpu) or 0.0
    print(f"  {'redis-server':<58} {redis_cpu:7.3f}")
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


def check_runs(stack: Stack, runs: list[Run], batches: dict[str, Batch]) -> list[str]:
    """Exactly once at the receiver for every delivery; returns the problems found."""
    stats = stack.receiver_stats()
    problems = []
    print("Checks (receiver counts per path; signature of the first request verified)")
    for run in runs:
        got = stats.get(run.path, {})
        total, distinct = int(got.get("total", 0)), int(got.get("distinct", 0))
        batch = next((b for b in batches.values() if b.path == run.path), None)
        secret = batch.secret if batch else batches["main"].secret
        extra = ""
        if run.kind == "watcher":
            extra = "; counters " + ", ".join(f"{k}=+{v}" for k, v in run.counters.items())
            if run.tasks_sent is not None:
                extra += (
                    f"; deliver tasks sent {run.tasks_sent} "
                    f"({run.tasks_sent - run.n} re-sent after 'postponed': no free slot)"
                )
            if run.first_post_after is not None:
                extra += f"; first POST {run.first_post_after * 1000:.0f} ms after dispatch began"
        if run.kind == "direct":
            extra = "; outcomes " + ", ".join(f"{k}={v}" for k, v in sorted(run.outcomes.items()))
        print(
            f"  {run.label}: {run.path} total={total} distinct webhook-ids={distinct} "
            f"(expected {run.n}), errors={run.errors}, {verify_sample(got, secret)}{extra}"
        )
        if run.kind != "plain" and (total != run.n or distinct != run.n or run.done != run.n):
            problems.append(f"{run.label}: {total} requests, {distinct} distinct, {run.done} done")
        if run.kind == "plain" and (run.done != run.n or total != run.n):
            problems.append(f"{run.label}: {run.done} ok of {run.n}, receiver saw {total}")
    print()
    return problems


def report(
    params: Params,
    stack: Stack,
    runs: list[Run],
    batches: dict[str, Batch],
    trace: Trace | None,
    load_before: str,
    started: float,
) -> list[str]:
    print()
    print("=== voltage-watcher delivery throughput benchmark ===")
    print(machine_line(stack.rt.redis.info("server").get("redis_version", "?"), load_before))
    main = batches["main"]
    sizes = [len(e.body) for e in main.events]
    dispatch = (
        f"this process calls watcher.tasks.dispatch_due_deliveries_now(rt) every "
        f"{params.dispatch_interval:g}s (claim with leases + apply_async; its CPU shows as `bench`)"
        if params.dispatch == "bench"
        else f"`celery -A watcher beat` with WATCHER_DISPATCH_INTERVAL={params.dispatch_interval:g}"
        " (dispatch ticks run in the worker)"
    )
    print(
        f"setup: receiver = stdlib ThreadingHTTPServer in its own process on 127.0.0.1 "
        f"(keep-alive, one write per answer, 200 'ok'); private redis-server {stack.redis.url} "
        f"is also the Celery broker; one `celery -A watcher worker --pool {params.pool} "
        f"--concurrency {params.concurrency} --without-mingle --without-gossip`"
    )
    print(f"dispatch: {dispatch}")
    print(
        f"throughput run: WATCHER_WEBHOOK_MAX_IN_FLIGHT={params.cap} (>= concurrency "
        f"{params.concurrency}; default {DEFAULT_CAP}); bodies: {len(sizes)} payment.completed "
        f"events, {min(sizes)}-{max(sizes)} bytes, all fanned out before the worker started; "
        f"plain loops post the main batch's bodies, signed per request with its subscription "
        "secret (webhook_headers), to their own paths of the same receiver"
    )
    print(
        "time: watcher = first POST at the receiver -> `deliveries:succeeded` reached N "
        f"(polled every {POLL_EVERY * 1000:g} ms); plain/direct = loop start -> end"
    )
    print()
    throughput_table(params, runs)
    runs_table(params, runs)
    commands_table(runs, list(batches.values()))
    if trace is not None:
        trace_table(trace)
    breakdown(params, runs, trace)
    for batch in batches.values():
        n = len(batch.events)
        print(
            f"fan-out of '{batch.label}' (before its run, not timed in it): {n} events in "
            f"{batch.fan_out_seconds:.2f}s ({n / batch.fan_out_seconds:,.0f}/s) with "
            f"{batch.subscriptions} enabled subscriptions: "
            f"{batch.fan_out.total_commands / n:.1f} Redis commands per event"
        )
    print()
    problems = check_runs(stack, runs, batches)
    print(f"total wall time: {time.time() - started:.1f}s")
    return problems


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(
        prog="python -m bench.deliveries",
        description="Webhook deliveries per second: one Celery worker vs a plain requests loop.",
    )
    parser.add_argument("--deliveries", type=int, default=None, help="N (default 2000)")
    parser.add_argument("--quick", action="store_true", help="N=300, trace of 10")
    parser.add_argument("--pool", choices=("threads", "prefork"), default="threads")
    parser.add_argument(
        "--workers-concurrency",
        type=int,
        default=None,
        help="worker --concurrency, also the plain loop's thread count (threads 8, prefork 2)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help=f"WATCHER_WEBHOOK_MAX_IN_FLIGHT for the throughput run (default: the concurrency, "
        f"at least {DEFAULT_CAP})",
    )
    parser.add_argument(
        "--skip-default-cap",
        action="store_true",
        help=f"skip the extra run with the default in-flight cap ({DEFAULT_CAP})",
    )
    parser.add_argument("--dispatch", choices=("bench", "beat"), default="bench")
    parser.add_argument("--dispatch-interval", type=float, default=0.2)
    parser.add_argument(
        "--trace",
        type=int,
        default=None,
        help="deliveries traced with redis-cli monitor (default 20, --quick 10, 0 = none)",
    )
    parser.add_argument("--no-direct", action="store_true", help="skip the no-Celery run")
    parser.add_argument("--deadline", type=float, default=None, help="seconds per phase")
    parser.add_argument(
        "--celery-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment: a Celery setting for the worker, beat and this process's dispatcher "
        "(e.g. worker_send_task_events=false); VALUE is read as JSON, else as a string",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the headline numbers"
    )
    args = parser.parse_args(argv)
    celery_conf: dict[str, Any] = {}
    for item in args.celery_conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--celery-conf expects KEY=VALUE, got {item!r}")
        try:
            celery_conf[key] = json.loads(value)
        except ValueError:
            celery_conf[key] = value
    n = args.deliveries or (300 if args.quick else 2000)
    concurrency = args.workers_concurrency or (8 if args.pool == "threads" else 2)
    cap = args.max_in_flight or max(concurrency, DEFAULT_CAP)
    trace = args.trace if args.trace is not None else (10 if args.quick else 20)
    if n < 1 or concurrency < 1 or cap < 1 or trace < 0 or args.dispatch_interval <= 0:
        parser.error("need positive --deliveries, concurrency, cap and dispatch interval")
    if args.dispatch == "beat" and trace:
        log("--dispatch beat: no trace (beat would dispatch the traced batch on its own)")
        trace = 0
    return Params(
        deliveries=n,
        pool=args.pool,
        concurrency=concurrency,
        cap=cap,
        default_cap_run=not args.skip_default_cap and cap != DEFAULT_CAP,
        dispatch=args.dispatch,
        dispatch_interval=args.dispatch_interval,
        trace=trace,
        direct=not args.no_direct,
        deadline=args.deadline or 60 + n / 20,
        keep=args.keep,
        celery_conf=celery_conf,
        json_path=args.json,
    )


def execute(
    params: Params, stack: Stack, on_batch: Callable[[Batch], None]
) -> tuple[list[Run], Trace | None]:
    runs: list[Run] = []
    n = params.deliveries
    scenarios = [Scenario("main", params.cap, params.trace)]
    if params.default_cap_run:
        scenarios.append(Scenario("defaultcap", DEFAULT_CAP, 0))
    trace = None
    for scenario in scenarios:
        log(f"{scenario.label}: adopting {n} completed payments and fanning them out")
        batch = prepare_batch(stack, scenario.label, n, params.deadline)
        on_batch(batch)
        if scenario.label == "main":
            for threads in dict.fromkeys((1, params.concurrency)):
                log(f"plain loop, {threads} thread(s): {n} posts")
                runs.append(run_plain(stack, batch, threads, params.deadline))
        log(f"{scenario.label}: starting the worker (cap {scenario.cap})")
        stack.start_worker(scenario)
        try:
            log(f"{scenario.label}: delivering {n}")
            runs.append(run_watcher(stack, batch, scenario))
            if scenario.trace:
                log(f"trace: {scenario.trace} deliveries with redis-cli monitor")
                trace = run_trace(stack, scenario.trace)
        finally:
            stack.stop_celery()
    if params.direct:
        log(f"direct: attempt_delivery from {params.concurrency} threads, {n} deliveries")
        batch = prepare_batch(stack, "direct", n, params.deadline)
        on_batch(batch)
        runs.append(run_direct(stack, batch, params.concurrency, params.deadline))
    return runs, trace


def headline(params: Params, runs: list[Run], problems: list[str]) -> dict[str, Any]:
    """The numbers `--json` writes (and `bench/run_all` shows)."""
    watchers = [r for r in runs if r.kind == "watcher"]
    plains = [r for r in runs if r.kind == "plain"]
    direct = next((r for r in runs if r.kind == "direct"), None)
    main_run = watchers[0] if watchers else None
    default_cap = watchers[1] if len(watchers) > 1 else None
    return {
        "bench": "deliveries",
        "deliveries": params.deliveries,
        "pool": params.pool,
        "concurrency": params.concurrency,
        "in_flight_cap": params.cap,
        "plain_threads": params.concurrency,
        "deliveries_per_s_worker": main_run.rate if main_run else None,
        "deliveries_per_s_worker_default_cap": default_cap.rate if default_cap else None,
        "deliveries_per_s_plain_1": plains[0].rate if plains else None,
        "deliveries_per_s_plain_threads": plains[-1].rate if plains else None,
        "deliveries_per_s_direct": direct.rate if direct else None,
        "worker_cpu_ms_per_delivery": main_run.per_item(main_run.delta.worker_cpu)
        if main_run
        else None,
        "problems": len(problems),
    }


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    exit_on_sigterm()
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-deliveries-"))
    stack = Stack(params, tmp)
    started = time.time()
    failed = True
    batches: dict[str, Batch] = {}
    try:
        log(f"temp dir {tmp}; starting redis-server and the receiver")
        stack.start()
        runs, trace = execute(params, stack, lambda b: batches.update({b.label: b}))
        problems = report(params, stack, runs, batches, trace, load_before, started)
        for problem in problems:
            print(f"PROBLEM: {problem}")
        if params.json_path is not None:
            write_json(params.json_path, headline(params, runs, problems))
        failed = False
        return 1 if problems else 0
    finally:
        if failed:
            log_tails((stack.receiver, stack.worker, stack.beat))
        stack.stop()
        remove_or_keep(tmp, keep=params.keep, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
