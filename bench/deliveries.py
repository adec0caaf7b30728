"""Webhook deliveries per second: exactly one Celery worker against plain requests loops.

The runs, the tables and the checks are described in bench/README.md (`bench.deliveries`);
nothing about timing is asserted, the exit status is 1 only if a delivery was missing or doubled.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import requests

from bench import deliveries_report as dr
from bench import harness as h
from bench import report as rep
from bench.harness import Run, Stack, Usage
from bench.naive import plain_loop, plain_run
from watcher.delivery.attempts import USER_AGENT, attempt_delivery
from watcher.delivery.signing import webhook_headers
from watcher.voltage.models import Payment

SUCCEEDED = "deliveries:succeeded"
UNFINISHED = ("deliveries:failed", "deliveries:dead")


def parse_args(argv: Sequence[str] | None) -> Any:
    p = rep.parser("bench.deliveries", "Webhook deliveries per second: one Celery worker vs a "
                 "plain requests loop.", "N=300, trace of 10")  # fmt: skip
    rep.options(
        p,
        ("--deliveries", int, None, "N (default 2000)"),
        ("--pool", ("threads", "prefork"), "threads", None),
        ("--workers-concurrency", int, None, "worker --concurrency, also the plain loop's "
         "thread count (threads 8, prefork 2)"),
        ("--max-in-flight", int, None, "WATCHER_WEBHOOK_MAX_IN_FLIGHT for the throughput run "
         f"(default: the concurrency, at least {dr.DEFAULT_CAP})"),
        ("--skip-default-cap", "store_true", False,
         f"skip the extra run with the default in-flight cap ({dr.DEFAULT_CAP})"),
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
    a.cap = a.max_in_flight or max(a.concurrency, dr.DEFAULT_CAP)
    a.trace = a.trace if a.trace is not None else (10 if a.quick else 20)
    if min(a.deliveries, a.concurrency, a.cap) < 1 or a.trace < 0 or a.dispatch_interval <= 0:
        p.error("need positive --deliveries, concurrency, cap and dispatch interval")
    if a.dispatch == "beat" and a.trace:
        rep.log("--dispatch beat: no trace (beat would dispatch the traced batch on its own)")
        a.trace = 0
    a.default_cap_run = not a.skip_default_cap and a.cap != dr.DEFAULT_CAP
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

    seconds, delta, _ = h.timed(b.usage, fan_out)
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

    return plain_run("plain requests loop", batch.events, threads, post, b.a.deadline, b.usage,
                     short=f"plain x{threads}", path=path)  # fmt: skip


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

    seconds, delta, (done, errors) = h.timed(
        b.usage, lambda: plain_loop(batch.delivery_ids, threads, attempt, b.a.deadline)
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
        time.sleep(dr.POLL_EVERY)
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
    default = " (default)" if cap == dr.DEFAULT_CAP else ""
    label = f"watcher, {a.pool} x{a.concurrency}, in-flight cap {cap}{default}"
    seconds = (done_at if done_at is not None else time.time()) - first
    return Run(label, "watcher", n, counters.get(SUCCEEDED, 0) - base, seconds, before.to(after),
               info)  # fmt: skip


def run_trace(b: Bench, k: int) -> dr.Trace:
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
    owners = dict.fromkeys(dr.client_ports(h.group_pids(h.pid_of(b.worker())), port), "worker")
    owners.update(dict.fromkeys(dr.client_ports([os.getpid()], port), "bench"))
    b.stack.stop_children("monitor")
    if done_at is None:
        raise RuntimeError(f"trace: {k} deliveries did not finish before the deadline")
    trace = dr.Trace(k, seconds, sent)
    text, counters = log_path.read_text(errors="replace"), b.rt.payments.keys.counters
    dr.parse_monitor(trace, text, owners, counters)
    return trace


# --- main -------------------------------------------------------------------------------------


def execute(b: Bench, batches: dict[str, Batch]) -> tuple[list[Run], dr.Trace | None]:
    a, runs, trace, n = b.a, list[Run](), None, b.a.deliveries
    scenarios = [("main", a.cap, a.trace)] + [("defaultcap", dr.DEFAULT_CAP, 0)] * a.default_cap_run
    for label, cap, traced in scenarios:
        rep.log(f"{label}: adopting {n} completed payments and fanning them out")
        batch = batches[label] = prepare_batch(b, label, n)
        for threads in dict.fromkeys((1, a.concurrency)) if label == "main" else ():
            rep.log(f"plain loop, {threads} thread(s): {n} posts")
            runs.append(run_plain(b, batch, threads))
        rep.log(f"{label}: starting the worker (cap {cap})")
        values = {**b.values, "WATCHER_WEBHOOK_MAX_IN_FLIGHT": str(cap)}
        b.stack.worker("worker", values, "--pool", a.pool, "--concurrency", str(a.concurrency),
                       "--without-mingle", "--without-gossip", "-n", f"bench-{label}@%h",
                       rt=b.rt, conf=a.celery_conf)  # fmt: skip
        try:
            rep.log(f"{label}: delivering {n}")
            runs.append(run_watcher(b, batch, cap))
            if traced:
                rep.log(f"trace: {traced} deliveries with redis-cli monitor")
                trace = run_trace(b, traced)
        finally:
            b.stack.stop_children("beat", "worker")
    if not a.no_direct:
        rep.log(f"direct: attempt_delivery from {a.concurrency} threads, {n} deliveries")
        batch = batches["direct"] = prepare_batch(b, "direct", n)
        runs.append(run_direct(b, batch, a.concurrency))
    return runs, trace


def headline(a: Any, runs: list[Run], problems: list[str]) -> dict[str, Any]:
    """The numbers `--json` writes (and `bench/run_all` shows)."""
    watchers, plains = dr.kinds(runs, "watcher"), dr.kinds(runs, "plain")
    direct, main = dr.first(runs, "direct"), dr.first(runs, "watcher")
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
        rep.log("starting redis-server and the receiver")
        b, batches = Bench(stack, a), dict[str, Batch]()
        runs, trace = execute(b, batches)
        problems = dr.report(b, runs, batches, trace)
        print(f"total wall time: {time.time() - started:.1f}s")
        return rep.finish(a, headline(a, runs, problems), problems)

    return h.run_in_stack("deliveries", a, body)


if __name__ == "__main__":
    sys.exit(main())
