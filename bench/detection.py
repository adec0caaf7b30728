"""Detection latency at the subscriber and Voltage request cost: the watcher against a naive
2-second poller. What it runs, measures and prints: bench/README.md (`bench.detection`); the
report and its arithmetic: `bench.detection_report`.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bench import harness as h
from bench.harness import API_KEY, ENV_ID, ORG_ID, Stack
from bench.naive import NaiveLoop, naive_threads
from bench.receiver import Receiver
from watcher.api.ingress import (
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    INGRESS_ROUTE,
    sign_voltage_webhook,
)
from watcher.engine.watching import create_and_watch
from watcher.voltage.client import VoltageClient

CREATE_SECONDS_PER_PAYMENT = 0.06  # the default pacing: 1,000 payments over 60 s
ACT_THREADS = 4
WALLETS = {"watcher": "wallet-bench-watcher", "hint": "wallet-bench-hint"}
NAIVE_WALLET = "wallet-bench-naive"
HINT_SECRET = "bench-voltage-webhook-secret-0123456789"  # noqa: S105 - the bench's own
API_TOKEN = "bench-api-token-0123456789abcdef"  # noqa: S105 - the bench's own API
EXPECTED = {"settle": "completed", "fail": "failed"}
# The realistic mix; offsets count from each payment's creation.
MIX_CLASSES = ("paid_early", "paid_late", "expired", "failed")
CLASS_LABELS = {"paid_early": "paid within 60 s", "paid_late": "paid after 60 s",
                "expired": "never paid: expired", "failed": "failed"}  # fmt: skip
CLASS_EXPECTED = dict(
    zip(MIX_CLASSES, ("completed", "completed", "expired", "failed"), strict=True)
)
DEFAULT_MIX_SHARES = (0.55, 0.15, 0.25, 0.05)
FIRST_MINUTE, EARLY_OFFSETS, LATE_FROM = 60.0, (1.0, 55.0), 62.0
BEFORE_EXPIRY = 15.0  # late payments and failures happen at least this long before expiry
MIN_EXPIRATION = 80


# --- parameters and the plan ------------------------------------------------------------------


def parse_shares(text: str) -> tuple[float, ...]:
    parts = tuple(float(x) for x in text.split(","))
    if len(parts) != 4 or any(not 0 <= x <= 1 for x in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            "four shares within 0..1 that add up to 1: paid early, paid late, expired, failed"
        )
    return parts


def parse_args(argv: Sequence[str] | None) -> Any:
    p = h.parser(
        "bench.detection",
        "Detection latency at a subscriber and Voltage requests: watcher vs a naive 2 s poller.",
        "smoke run: N=30 and an 18 s window; with --mix: N=40 and expiration 90 s",
    )
    h.options(
        p,
        ("--payments", int, None, "per side (default 200)"),
        ("--create-over", float, None, f"pace the creates over this many seconds (default "
         f"{CREATE_SECONDS_PER_PAYMENT:g} s per payment: 60 s for 1,000; 0 = as fast as the "
         "threads go)"),
        ("--create-threads", int, 8, None),
        ("--settle-share", float, 0.7, None),
        ("--fail-share", float, 0.05, "of N, fail instead"),
        ("--duration", float, None, "settle window in seconds after the creates (default 120, "
         "--quick 18)"),
        ("--drain-timeout", float, None, "after the window (--mix: after the last expiry), wait "
         "at most this long for reports (default 30)"),
        ("--seed", int, None, None),
        ("--mode", ("concurrent", "sequential"), "concurrent", None),
        ("--hint", "store_true", False, "add a side: a second watcher deployment told by signed "
         "Voltage webhooks right after each settle/fail (its own Redis db, worker, beat, "
         "`watcher api`)"),
        ("--mix", "store_true", False, "realistic mix instead of the settle window: paid within "
         "a minute, paid later, never paid (expire), failed"),
        ("--expiration", int, None, "invoice expiration in seconds (--mix: default 240, --quick "
         f"90, at least {MIN_EXPIRATION}; otherwise Voltage's default)"),
        ("--mix-shares", parse_shares, DEFAULT_MIX_SHARES, "--mix: EARLY,LATE,EXPIRED,FAILED "
         "shares of payments paid within 60 s, paid later, never paid, failed (default "
         f"{','.join(f'{x:g}' for x in DEFAULT_MIX_SHARES)})"),
        ("--naive-interval", float, 2.0, None),
        ("--naive-threads", int, None, "default: enough for N (N/40, >= 8)"),
        ("--worker-concurrency", int, None, "override the Procfile worker's concurrency "
         "(default: one child per CPU)"),
        ("--poll-schedule", str, None, "override WATCHER_POLL_SCHEDULE"),
        ("--sweep-interval", str, None, "override WATCHER_SWEEP_INTERVAL"),
        ("--dispatch-interval", str, None, "override WATCHER_DISPATCH_INTERVAL"),
    )  # fmt: skip
    a = p.parse_args(argv)
    a.payments = a.payments or (40 if a.mix and a.quick else 30 if a.quick else 200)
    if a.mix:
        a.expiration = a.expiration or (90 if a.quick else 240)
        if not MIN_EXPIRATION <= a.expiration <= 86400:
            p.error(f"--expiration must be {MIN_EXPIRATION}..86400 seconds")
    elif a.expiration is not None and not 1 <= a.expiration <= 86400:
        p.error("--expiration must be 1..86400 seconds")
    a.drain_timeout = a.drain_timeout or ((20.0 if a.mix else 15.0) if a.quick else 30.0)
    if a.payments < 1 or not 0 <= a.settle_share <= 1 or not 0 <= a.fail_share <= 1:
        p.error("need --payments >= 1 and shares within 0..1")
    if a.settle_share + a.fail_share > 1:
        p.error("--settle-share + --fail-share must not exceed 1")
    if a.create_over is None:
        a.create_over = CREATE_SECONDS_PER_PAYMENT * a.payments
    if a.create_over < 0 or a.create_threads < 1:
        p.error("--create-over must be >= 0 and --create-threads >= 1")
    if a.worker_concurrency is not None and a.worker_concurrency < 1:
        p.error("--worker-concurrency must be >= 1")
    a.duration = a.duration or (18.0 if a.quick else 120.0)
    a.seed = a.seed if a.seed is not None else random.randrange(1, 1_000_000)
    a.naive_threads = a.naive_threads or naive_threads(a.payments)
    return a


def mix_counts(n: int, shares: Sequence[float]) -> list[int]:
    """Shares of n as whole payments that add up to n (largest remainders)."""
    counts = [math.floor(n * s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: n * shares[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def make_plan(a: Any, rng: random.Random) -> tuple[list[float], list[str | None], list[str]]:
    """Index-aligned for every side: payment i gets actions[i] at offsets[i] (or nothing);
    its class says what it must end as."""
    n = a.payments
    if not a.mix:
        settle_n = round(n * a.settle_share)
        fail_n = min(round(n * a.fail_share), n - settle_n)
        actions: list[str | None] = [None] * n
        for position, index in enumerate(rng.sample(range(n), settle_n + fail_n)):
            actions[index] = "settle" if position < settle_n else "fail"
        offsets = [rng.uniform(0.0, a.duration) for _ in range(n)]
        names = {"settle": "settled", "fail": "failed"}
        return offsets, actions, [names.get(x or "", "untouched") for x in actions]
    counts = mix_counts(n, a.mix_shares)
    classes = [name for name, c in zip(MIX_CLASSES, counts, strict=True) for _ in range(c)]
    rng.shuffle(classes)
    e = float(a.expiration)
    ranges = {"paid_early": EARLY_OFFSETS, "paid_late": (LATE_FROM, e - BEFORE_EXPIRY),
              "failed": (1.0, e - BEFORE_EXPIRY), "expired": (e, e)}  # fmt: skip
    offsets = [rng.uniform(*ranges[c]) if c != "expired" else e for c in classes]
    acts = {"paid_early": "settle", "paid_late": "settle", "failed": "fail"}
    return offsets, [acts.get(c) for c in classes], classes


def expected_of(name: str, mix: bool) -> str | None:
    if mix:
        return CLASS_EXPECTED[name]
    return {"settled": "completed", "failed": "failed"}.get(name)


# --- the sides --------------------------------------------------------------------------------


class Side:
    """One way of learning that payments ended, and what it learnt."""

    label = "?"

    def __init__(self, name: str, expiration: int | None) -> None:
        self.name, self.expiration = name, expiration
        self.ids: dict[int, str] = {}  # plan index -> payment id
        self.classes: dict[str, str] = {}
        self.expected: dict[str, str | None] = {}  # the final status it must reach
        self.actions: dict[str, str] = {}  # settle | fail
        self.created_at: dict[str, float] = {}
        self.acted_at: dict[str, float] = {}  # when the settle/fail call answered
        self.expires_at: dict[str, float] = {}  # the simulator's expiry instant
        self.reported: dict[str, float] = {}  # the subscriber knows (headline)
        self.reported_status: dict[str, str] = {}
        self.detected: dict[str, float] = {}  # the watcher knows (outbox)
        self.detected_status: dict[str, str] = {}
        self.events: Counter[str] = Counter()  # outbox events per payment
        self.double_reported: dict[str, int] = {}  # distinct webhook-ids
        self.act_failed: set[str] = set()
        self.redeliveries = self.create_errors = self.create_requests = self.create_posts = 0
        self.phase, self.started, self.ended = "", 0.0, 0.0

    def create(self, index: int) -> str:
        raise NotImplementedError

    def finish_creates(self) -> None:
        """Note how many requests the creates took (called once they are all done)."""

    def after_act(self, pid: str, action: str, payment: dict[str, Any]) -> None:
        """Right after a settle/fail call answered (the hint side tells the watcher)."""

    def refresh(self) -> None:
        """Pick up detections and deliveries (the naive loop records its own as it goes)."""

    def checked(self) -> list[str]:
        """Payments whose outcome is checked: all but those whose settle/fail call failed."""
        return [pid for pid in self.expected if pid not in self.act_failed]

    def undetected(self) -> list[str]:
        return [p for p in self.checked() if self.expected[p] and p not in self.reported]

    def wrong(self) -> list[str]:
        return [p for p in self.checked() if p in self.reported and self.expected[p]
                and self.reported_status.get(p) != self.expected[p]]  # fmt: skip

    def unexpected(self) -> list[str]:
        """Reported final although nothing happened to them (latency plan: untouched)."""
        return [p for p in self.checked()
                if not self.expected[p] and (p in self.reported or p in self.detected)]  # fmt: skip

    def duplicates(self) -> list[str]:
        """Reported twice without saying so: two outbox events, or two distinct webhook-ids."""
        return sorted({p for p, n in self.events.items() if n > 1} | set(self.double_reported))

    def problems(self) -> int:
        found = (self.undetected(), self.wrong(), self.unexpected(), self.duplicates())
        return sum(len(x) for x in found)


class WatcherSide(Side):
    """`create_and_watch`; reported = the first verified webhook at the bench's receiver,
    detected = the XADD time of the outbox event."""

    label = "watcher"

    def __init__(self, a: Any, dep: Deployment, receiver: Receiver) -> None:
        super().__init__(dep.name, a.expiration)
        self.rt, self.receiver, self.path = dep.rt, receiver, dep.path
        self.invalid: Counter[str] = Counter()
        self.posts, self._last_entry = 0, "-"
        self._requests_before = self.rt.voltage.request_count

    def create(self, index: int) -> str:
        meta = {"bench": self.name, "i": str(index)}
        return create_and_watch(self.rt, amount_msats=1_000 + index, metadata=meta,
                                description=f"bench {self.name} {index}",
                                expiration=self.expiration).record.id  # fmt: skip

    def finish_creates(self) -> None:
        self.create_requests = self.rt.voltage.request_count - self._requests_before

    def refresh(self) -> None:
        ids = set(self.ids.values())
        store = self.rt.store
        while entries := store.redis.xrange(
            store.keys.outbox, min="-" if self._last_entry == "-" else f"({self._last_entry}",
            count=500,
        ):  # fmt: skip
            for entry_id, fields in entries:
                self._last_entry, pid = entry_id, fields.get("payment_id", "")
                if pid in ids:
                    self.events[pid] += 1
                if pid in ids and pid not in self.detected:
                    self.detected[pid] = int(entry_id.split("-")[0]) / 1000.0
                    self.detected_status[pid] = fields.get("type", "").removeprefix("payment.")
        inbox = self.receiver.snapshot(self.path)
        for pid, at in inbox.arrived.items():
            if pid in ids and pid not in self.reported:
                self.reported[pid], self.reported_status[pid] = at, inbox.status[pid]
        self.double_reported = {p: n for p, n in inbox.double_reports().items() if p in ids}
        self.redeliveries, self.invalid, self.posts = inbox.redeliveries, inbox.invalid, inbox.posts


class HintSide(WatcherSide):
    """A watcher that also hears from "Voltage": a signed webhook right after each settle/fail."""

    label = "watcher+hint"

    def __init__(self, a: Any, dep: Deployment, receiver: Receiver) -> None:
        super().__init__(a, dep, receiver)
        self.url, self.sessions = dep.api_url + "/v1" + INGRESS_ROUTE, h.Sessions()
        self._lock = threading.Lock()
        self.answers: Counter[str] = Counter()  # accepted | ignored: <reason> | HTTP n | error
        self.post_ms: list[float] = []

    def after_act(self, pid: str, action: str, payment: dict[str, Any]) -> None:
        event = EXPECTED[action]
        body = {"type": "receive", "detail": {"event": event, "data": payment}}
        raw, stamp = json.dumps(body, separators=(",", ":")).encode(), str(int(time.time()))
        headers = {"content-type": "application/json", HEADER_TIMESTAMP: stamp,
                   HEADER_SIGNATURE: sign_voltage_webhook(HINT_SECRET, raw, stamp),
                   "x-voltage-event": f"receive.{event}",
                   "x-voltage-webhook-id": str(uuid.uuid4())}  # fmt: skip
        began = time.perf_counter()
        try:
            response = self.sessions.get().post(self.url, data=raw, headers=headers, timeout=10)
        except requests.RequestException as exc:
            with self._lock:
                self.answers[f"error: {type(exc).__name__}"] += 1
            return
        answer: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            answer = response.json()
        outcome = f"HTTP {response.status_code}"
        if response.status_code == 202:
            ok = answer.get("status") == "accepted"
            outcome = "accepted" if ok else f"ignored: {answer.get('reason')}"
        with self._lock:
            self.post_ms.append((time.perf_counter() - began) * 1000)
            self.answers[outcome] += 1


class NaiveSide(Side):
    """Creates with a plain VoltageClient; the 2 s loop GETs every pending payment and its
    first final GET is both reported and detected."""

    label = "naive"

    def __init__(self, a: Any, stack: Stack) -> None:
        super().__init__("naive", a.expiration)
        self.posts_seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=2, pool_maxsize=32, max_retries=0))
        session.hooks["response"].append(self._count_response)
        self.client = VoltageClient(base_url=f"{stack.sim_root}/v1", api_key=API_KEY,
                                    organization_id=ORG_ID, environment_id=ENV_ID,
                                    session=session)  # fmt: skip
        self.loop = NaiveLoop(stack.payments_url, API_KEY, interval=a.naive_interval,
                              threads=a.naive_threads, on_final=self._final)  # fmt: skip

    def _count_response(self, response: requests.Response, *_args: Any, **_kw: Any) -> None:
        with self._lock:
            self.posts_seen[response.request.method or "?"] += 1

    def _final(self, pid: str, status: str, seen: float) -> None:
        with self._lock:
            self.events[pid] += 1
            if pid not in self.reported:
                self.reported[pid] = self.detected[pid] = seen
                self.reported_status[pid] = self.detected_status[pid] = status

    def create(self, index: int) -> str:
        pid = self.client.submit_receive(
            wallet_id=NAIVE_WALLET, amount_msats=1_000 + index, expiration=self.expiration,
            description=f"bench naive {index}", metadata={"bench": "naive", "i": str(index)},
        )  # fmt: skip
        self.client.wait_for_invoice(pid, timeout=10)
        self.loop.add(pid)
        return pid

    def finish_creates(self) -> None:
        self.create_requests, self.create_posts = self.client.request_count, self.posts_seen["POST"]

    @property
    def requests_made(self) -> int:
        """Every Voltage request this side sent: creates (POST + invoice GETs) + loop GETs."""
        return self.client.request_count + self.loop.gets

    def stop(self) -> None:
        if not self.loop.stopped:
            self.loop.stop()
        self.client.close()


# --- the stack: per watcher deployment the Procfile's worker and beat (+ `watcher api`) -------


class Deployment:
    """One watcher: a Redis database and wallet of its own, one subscription to its own path
    on the bench's receiver; the hint side also runs `watcher api` with the ingress on."""

    def __init__(self, stack: Stack, a: Any, name: str, db: int, receiver: Receiver) -> None:
        self.name, self.path, self.suffix = name, f"/hooks/{name}", "" if not db else f"-{name}"
        overrides = {"WATCHER_POLL_SCHEDULE": a.poll_schedule,
                     "WATCHER_SWEEP_INTERVAL": a.sweep_interval,
                     "WATCHER_DISPATCH_INTERVAL": a.dispatch_interval}  # fmt: skip
        extra = {k: v for k, v in overrides.items() if v is not None}
        if name == "hint":
            extra |= {"VOLTAGE_WEBHOOK_SECRET": HINT_SECRET, "WATCHER_API_TOKENS": API_TOKEN}
        url = h.db_url(stack.redis.url, db)
        self.values = stack.values(
            WALLETS[name], url, WATCHER_WEBHOOK_ALLOW_PRIVATE="true", **extra
        )
        self.rt = stack.runtime(self.values, own_process=not db)
        _sub, secret = self.rt.subscriptions.create(
            url=receiver.url(self.path), wallet_id=WALLETS[name], description=f"bench {name}"
        )
        receiver.add_path(self.path, secret)
        self.api_url = ""

    def start(self, stack: Stack, a: Any) -> None:
        """The Procfile's layout; a second deployment on this host only gets its own node."""
        args = ["--loglevel", "INFO"]
        args += ["--concurrency", str(a.worker_concurrency)] if a.worker_concurrency else []
        args += ["-n", f"bench{self.suffix}@%h"] if self.suffix else []
        stack.worker(f"worker{self.suffix}", self.values, *args, rt=self.rt)
        stack.beat(f"beat{self.suffix}", self.values, rt=self.rt)
        if self.name == "hint":
            from watcher.redis_server import free_port

            port = free_port()
            self.api_url = f"http://127.0.0.1:{port}"
            command = h.watcher_command("api", "--host", "127.0.0.1", "--port", str(port))
            api = stack.spawn(f"api{self.suffix}", command, self.values)
            ready = f"{self.api_url}/readyz"
            h.wait_for("the hint API", lambda: stack.http.get(ready, timeout=1).ok, 60, [api])


# --- one measured phase: creates, settles and fails at their instants, the drain --------------


class Actor:
    """Makes the settle/fail calls at their planned instants, from a small pool, while creates
    are still running (the mix counts offsets from each payment's own creation)."""

    def __init__(self, stack: Stack, info: dict[str, Any], rng: random.Random) -> None:
        self.stack, self.info, self.rng, self.added, self.done = stack, info, rng, 0, 0
        self._heap: list[tuple[float, float, int, Side, str, str]] = []
        self._cond, self._closed = threading.Condition(), False
        self._pool = ThreadPoolExecutor(ACT_THREADS, thread_name_prefix="act")
        self._thread = threading.Thread(target=self._run, name="actor", daemon=True)
        self._thread.start()

    def add(self, due: float, side: Side, pid: str, action: str) -> None:
        with self._cond:
            self.added += 1
            heapq.heappush(self._heap, (due, self.rng.random(), self.added, side, pid, action))
            self._cond.notify()

    def close_and_join(self, extra: float) -> None:
        """Until every call was made, or `extra` seconds after the last one was due."""
        with self._cond:
            last, self._closed = max((e[0] for e in self._heap), default=time.time()), True
            self._cond.notify()
        timeout = max(0.0, last - time.time()) + extra
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"settle/fail calls still running after {timeout:.0f}s")
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._heap and self._closed:
                    return
                wait = self._heap[0][0] - time.time() if self._heap else 0.5
                if wait > 0:
                    self._cond.wait(min(wait, 0.5))
                    continue
                due, _, _, side, pid, action = heapq.heappop(self._heap)
            self._pool.submit(self._act, due, side, pid, action)

    def _act(self, due: float, side: Side, pid: str, action: str) -> None:
        with self._cond:
            lateness = self.info["settle_lateness_max"]
            self.info["settle_lateness_max"] = max(lateness, time.time() - due)
        try:
            payment = self.stack.sim("POST", f"/payments/{pid}/{action}")
        except requests.RequestException as exc:
            side.act_failed.add(pid)
            h.log(f"{side.name}: {action} {pid} failed: {exc}")
            return
        side.acted_at[pid] = time.time()
        side.after_act(pid, action, payment)
        with self._cond:
            self.done += 1


def create_all(sides: list[Side], a: Any, plan: Any, actor: Actor, info: dict[str, Any]) -> None:
    """Payment i on every side, interleaved, each create at its paced instant."""
    offsets, actions, classes = plan
    jobs = [(side, i) for i in range(a.payments) for side in sides]
    spacing, began, lock, taken = (
        a.create_over / max(1, len(jobs)),
        time.time(),
        threading.Lock(),
        [0],
    )

    def work() -> None:
        while True:
            with lock:
                k, taken[0] = taken[0], taken[0] + 1
            if k >= len(jobs):
                return
            while (wait := began + k * spacing - time.time()) > 0:
                time.sleep(min(wait, 0.05))
            with lock:
                info["create_lag_max"] = max(info["create_lag_max"], -wait)
            side, i = jobs[k]
            try:
                pid = side.create(i)
            except Exception as exc:
                side.create_errors += 1
                h.log(f"{side.name}: create {i} failed: {type(exc).__name__}: {exc}")
                continue
            side.ids[i], side.created_at[pid], side.classes[pid] = pid, time.time(), classes[i]
            side.expected[pid] = expected_of(classes[i], a.mix)
            if actions[i] is not None:
                side.actions[pid] = actions[i]
                if a.mix:
                    actor.add(side.created_at[pid] + offsets[i], side, pid, actions[i])

    threads = [threading.Thread(target=work, daemon=True) for _ in range(a.create_threads)]
    for thread in threads:
        thread.start()
    # Each create is bounded (HTTP timeouts, a 10 s invoice wait), so this is too.
    deadline = time.monotonic() + a.create_over + 30 * -(-len(jobs) // len(threads)) + 60
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise RuntimeError("creates did not finish before their deadline")


def run_phase(label: str, sides: list[Side], stack: Stack, a: Any, plan: Any,
              rng: random.Random) -> dict[str, Any]:  # fmt: skip
    """Create on every side (settling to plan meanwhile for the mix), then settle/fail to plan,
    then drain until everything that must end was reported."""
    info: dict[str, Any] = {"label": label, "settle_lateness_max": 0.0, "create_lag_max": 0.0}
    for side in sides:
        side.started, side.phase = time.time(), label
    posts_before = stack.sim("GET", "/stats")["by_route"].get("POST /payments", 0)
    names = " and ".join(s.name for s in sides)
    h.log(f"{label}: creating {a.payments} payments on {names} over {a.create_over:g}s")
    actor, began = Actor(stack, info, rng), time.monotonic()
    try:
        create_all(sides, a, plan, actor, info)
        info["create_seconds"] = time.monotonic() - began
        h.log(f"{label}: created in {info['create_seconds']:.1f}s")
        share_create_posts(sides, stack, posts_before, info)
        if not a.mix:  # the latency plan: payment i of every side at t0 + offsets[i]
            t0 = time.time()
            for i, (offset, action) in enumerate(zip(plan[0], plan[1], strict=True)):
                for side in sides:
                    if (pid := side.ids.get(i)) is not None and action is not None:
                        actor.add(t0 + offset, side, pid, action)
            h.log(f"{label}: settling over {a.duration:.0f}s")
    finally:
        actor.close_and_join(120)
    timeout = a.drain_timeout
    if a.mix and any(s.created_at for s in sides):
        last = max(max(s.created_at.values(), default=0.0) for s in sides) + a.expiration
        timeout += max(0.0, last - time.time())
    h.log(f"{label}: {actor.done} settles/fails done; waiting up to {timeout:.0f}s for reports")
    drain(sides, stack, timeout)
    finish_phase(sides, stack, a, info)
    h.log(f"{label}: done")
    return info


def share_create_posts(sides: list[Side], stack: Stack, before: int, info: dict[str, Any]) -> None:
    """The naive client counts its own POSTs; the rest of the window's POSTs are the watchers',
    shared by how many creates each attempted (retries are rare: no faults are injected)."""
    posts = stack.sim("GET", "/stats")["by_route"].get("POST /payments", 0) - before
    info["posts_during_creates"] = posts
    for side in sides:
        side.finish_creates()
    rest = posts - sum(s.create_posts for s in sides if isinstance(s, NaiveSide))
    watchers = [s for s in sides if isinstance(s, WatcherSide)]
    attempts = [len(s.ids) + s.create_errors for s in watchers]
    for side, tried in zip(watchers, attempts, strict=True):
        side.create_posts = rest * tried // max(1, sum(attempts))
    if watchers:
        watchers[0].create_posts += rest - sum(s.create_posts for s in watchers)


def drain(sides: list[Side], stack: Stack, timeout: float) -> None:
    """Until every payment that must end was reported on every side, or the deadline."""
    deadline, next_report = time.monotonic() + timeout, time.monotonic() + 30
    while time.monotonic() < deadline:
        for side in sides:
            side.refresh()
        if not (left := sum(len(side.undetected()) for side in sides)):
            return
        if any(isinstance(s, WatcherSide) for s in sides) and not all(
            c.alive for c in stack.children
        ):  # fmt: skip
            h.log("a Celery or API process died; stopping the drain early")
            return
        if time.monotonic() > next_report:
            next_report += 30
            h.log(f"waiting for {left} reports ({deadline - time.monotonic():.0f}s left)")
        time.sleep(0.2)


def finish_phase(sides: list[Side], stack: Stack, a: Any, info: dict[str, Any]) -> None:
    end = time.time()
    for side in sides:
        side.refresh()
        side.ended = end
        if isinstance(side, NaiveSide):
            side.stop()
    info["stats"] = stack.sim("GET", "/stats")
    info["counters"] = {s.name: s.rt.store.counters() for s in sides if isinstance(s, WatcherSide)}
    for side in sides if a.mix else ():  # the expiry instant of every payment left to expire
        for pid in side.checked():
            if side.expected[pid] != "expired" or pid in side.acted_at:
                continue
            try:
                raw = stack.sim("GET", f"/payments/{pid}")
                side.expires_at[pid] = datetime.fromisoformat(raw["sim"]["expires_at"]).timestamp()
            except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
                h.log(f"{side.name}: no expiry instant for {pid}: {exc}")


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    from bench.detection_report import report

    a = parse_args(argv)
    started = time.time()

    def body(stack: Stack) -> int:
        extra = " (x2) and the API" if a.hint else ""
        h.log(f"starting redis, simulator, receiver, celery worker and beat{extra}")
        stack.start(generating_delay=0.05)
        receiver = Receiver().start()
        sides: list[Side] = []
        try:
            names = ["watcher", "hint"] if a.hint else ["watcher"]
            deps = [Deployment(stack, a, name, db, receiver) for db, name in enumerate(names)]
            for dep in deps:
                dep.start(stack, a)
            sides = [(HintSide if d.name == "hint" else WatcherSide)(a, d, receiver) for d in deps]
            naive = NaiveSide(a, stack)
            sides.append(naive)
            rng = random.Random(a.seed)
            plan = make_plan(a, rng)
            if a.mode == "concurrent":
                naive.loop.start()
                phases = [run_phase("run", sides, stack, a, plan, rng)]
            else:
                phases = [run_phase("watcher phase", sides[:-1], stack, a, plan, rng)]
                stack.stop_children(*(c.name for c in stack.children if c.name != "simulator"))
                naive.loop.start()
                phases.append(run_phase("naive phase", [naive], stack, a, plan, rng))
            values = report(a, stack, deps[0].rt.settings, sides, phases, started)
        finally:
            for side in sides:
                if isinstance(side, NaiveSide):
                    side.stop()
                if isinstance(side, HintSide):
                    side.sessions.close()
            receiver.stop()
        code = h.finish(a, values, [])
        return 1 if values["problems"] else code

    return h.run_in_stack("detection", a, body)


if __name__ == "__main__":
    sys.exit(main())
