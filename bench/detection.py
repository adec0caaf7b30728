"""Detection latency at the subscriber and Voltage request cost: the watcher against a naive
2-second poller.

The script starts everything it needs on loopback, in a temporary directory: its own
redis-server, the Voltage simulator as a separate process, a webhook receiver (a threaded
`http.server` in this process), and per watcher deployment the Procfile's worker
(`celery -A watcher worker --loglevel INFO`: prefork, one child per CPU) plus `celery -A watcher
beat`, with production defaults unless a flag overrides one. Each deployment has one
subscription, for its own wallet, to its own path on the receiver. Then it creates N receives
per side, paced over `--create-over` seconds from a few threads:

* **watcher** (no hints): with `create_and_watch`. *Latency* = the first webhook for the payment
  that arrives at the receiver *and verifies* (Standard Webhooks, checked with the
  `standardwebhooks` package), minus the moment the simulator's settle/fail call answered. The
  watcher's own outbox write (the XADD time) is kept as the secondary *detected* column.
* **watcher+hint** (`--hint`): a second deployment (own Redis database, worker, beat, wallet)
  plus `watcher api` with VOLTAGE_WEBHOOK_SECRET. The bench plays Voltage: right after a
  settle/fail answers it POSTs Voltage's signed webhook to `/v1/voltage/webhooks`.
* **naive**: a plain `VoltageClient` creates (own wallet, so the watchers' sweeps never page
  through them); a loop GETs every pending payment every 2 s with enough threads for N; its
  first final GET is its detection. It reports the interval it really achieved.

Two plans. **latency** (default): payment i of each side settles (or fails) at the same offset,
uniform over the settle window after the creates; the rest stay pending. **mix** (`--mix`): each
offset counts from the payment's own creation: paid within the first minute, paid later, never
paid (left to expire: expiry -> webhook is measured from the invoice's expiry instant), failed.

Cost: Voltage requests per payment for every side (the simulator's `GET /_sim/stats`), the
watcher's per-purpose breakdown from its Redis counters (`voltage_requests:<purpose>`, missing
= 0) cross-checked against the simulator, the ratio watcher/naive, and with `--mix` the same
per-payment cost extrapolated by arithmetic to Voltage's default 3,600 s invoices.

Nothing about timing is asserted; the exit status is 1 only if a payment was missed, reached the
wrong status, was reported twice under different webhook-ids, or was reported without having
changed. Redeliveries under the same webhook-id are counted, not failures.

Run (from the project root):

    .venv/bin/python -m bench.detection --quick          # N=30, ~25 s smoke run
    .venv/bin/python -m bench.detection                  # N=200, 120 s window, ~2.5 min
    .venv/bin/python -m bench.detection --payments 1000  # creates over 60 s, ~3 min
    .venv/bin/python -m bench.detection --hint           # + a watcher told by Voltage's webhooks
    .venv/bin/python -m bench.detection --mix --payments 1000   # expiration 240 s, ~5 min
    .venv/bin/python -m bench.detection --mix --quick    # N=40, expiration 90 s, ~2 min
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests

from bench.common import (
    exit_on_sigterm,
    load_average,
    log,
    log_tails,
    remove_or_keep,
    write_json,
)
from bench.detection_plan import (
    DEFAULT_MIX_SHARES,
    MIN_EXPIRATION,
    Params,
    PhaseInfo,
    Plan,
    make_plan,
)
from bench.detection_report import report
from bench.detection_sides import HintSide, NaiveSide, Side, WatcherSide
from bench.detection_stack import Stack
from bench.naive import naive_threads

CREATE_SECONDS_PER_PAYMENT = 0.06  # the default pacing: 1,000 payments over 60 s
ACT_THREADS = 4


# --- settles and fails at their planned instants ----------------------------------------------


class Actor:
    """Makes the settle/fail calls at their planned instants, from a small pool, while creates
    are still running (the mix counts offsets from each payment's own creation)."""

    def __init__(self, stack: Stack, info: PhaseInfo, rng: random.Random) -> None:
        self.stack = stack
        self.info = info
        self.rng = rng
        self.added = 0
        self.done = 0
        self._heap: list[tuple[float, float, int, Side, str, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(ACT_THREADS, thread_name_prefix="act")
        self._thread = threading.Thread(target=self._run, name="actor", daemon=True)

    def start(self) -> Actor:
        self._thread.start()
        return self

    def add(self, due: float, side: Side, pid: str, action: str) -> None:
        with self._cond:
            self.added += 1
            entry = (due, self.rng.random(), self.added, side, pid, action)
            heapq.heappush(self._heap, entry)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def last_due(self) -> float:
        with self._cond:
            return max((entry[0] for entry in self._heap), default=time.time())

    def join(self, timeout: float) -> None:
        """Until every call was made, or `timeout`."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"settle/fail calls still running after {timeout:.0f}s")
        self._pool.shutdown(wait=True)

    def _next(self) -> tuple[float, Side, str, str] | None:
        with self._cond:
            while True:
                if self._heap:
                    wait = self._heap[0][0] - time.time()
                    if wait <= 0:
                        due, _, _, side, pid, action = heapq.heappop(self._heap)
                        return due, side, pid, action
                    self._cond.wait(min(wait, 0.5))
                elif self._closed:
                    return None
                else:
                    self._cond.wait(0.5)

    def _run(self) -> None:
        while (item := self._next()) is not None:
            self._pool.submit(self._act, *item)

    def _act(self, due: float, side: Side, pid: str, action: str) -> None:
        with self._cond:
            self.info.settle_lateness_max = max(self.info.settle_lateness_max, time.time() - due)
        try:
            payment = self.stack.control("POST", f"/payments/{pid}/{action}")
        except requests.RequestException as exc:
            side.act_failed.add(pid)
            log(f"{side.name}: {action} {pid} failed: {exc}")
            return
        side.acted_at[pid] = time.time()
        side.after_act(pid, action, payment)
        with self._cond:
            self.done += 1


# --- one measured phase -----------------------------------------------------------------------


class Creator:
    """Creates payment i on every side, interleaved, each job at its paced instant."""

    def __init__(
        self, sides: list[Side], params: Params, plan: Plan, actor: Actor, info: PhaseInfo
    ) -> None:
        self.sides = sides
        self.params = params
        self.plan = plan
        self.actor = actor
        self.info = info
        self.jobs = [(side, i) for i in range(params.payments) for side in sides]
        self.spacing = params.create_over / len(self.jobs) if self.jobs else 0.0
        self._next = 0
        self._lock = threading.Lock()
        self.began = 0.0

    def run(self) -> None:
        self.began = time.time()
        threads = [
            threading.Thread(target=self._work, name=f"create-{k}", daemon=True)
            for k in range(self.params.create_threads)
        ]
        for thread in threads:
            thread.start()
        # Each create is bounded (HTTP timeouts, a 10 s invoice wait), so this is too.
        per_thread = -(-len(self.jobs) // len(threads))
        deadline = time.monotonic() + self.params.create_over + 30 * per_thread + 60
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise RuntimeError("creates did not finish before their deadline")

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.jobs):
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        while (k := self._take()) is not None:
            due = self.began + k * self.spacing
            while (wait := due - time.time()) > 0:
                time.sleep(min(wait, 0.05))
            with self._lock:
                self.info.create_lag_max = max(self.info.create_lag_max, time.time() - due)
            self._create(*self.jobs[k])

    def _create(self, side: Side, index: int) -> None:
        try:
            pid = side.create(index)
        except Exception as exc:
            side.create_errors += 1
            log(f"{side.name}: create {index} failed: {type(exc).__name__}: {exc}")
            return
        created = time.time()
        side.ids[index] = pid
        side.created_at[pid] = created
        side.classes[pid] = self.plan.classes[index]
        side.expected[pid] = self.plan.expected[index]
        action = self.plan.actions[index]
        if action is not None:
            side.actions[pid] = action
            if self.plan.from_creation:
                self.actor.add(created + self.plan.offsets[index], side, pid, action)


def create_all(
    label: str,
    sides: list[Side],
    stack: Stack,
    params: Params,
    plan: Plan,
    actor: Actor,
    info: PhaseInfo,
) -> None:
    now = time.time()
    for side in sides:
        side.started = now
        side.phase = label
    before = stack.stats()["by_route"].get("POST /payments", 0)
    log(
        f"{label}: creating {params.payments} payments on {' and '.join(s.name for s in sides)}"
        f" over {params.create_over:g}s"
    )
    began = time.monotonic()
    Creator(sides, params, plan, actor, info).run()
    info.create_seconds = time.monotonic() - began
    posts = stack.stats()["by_route"].get("POST /payments", 0) - before
    info.posts_during_creates = posts
    for side in sides:
        side.finish_creates()
    # The naive client counts its own POSTs; the rest of this window's POSTs are the watchers',
    # shared by how many creates each attempted (retries are rare: no faults are injected).
    rest = posts - sum(s.create_posts for s in sides if isinstance(s, NaiveSide))
    watchers = [s for s in sides if isinstance(s, WatcherSide)]
    attempts = [len(s.ids) + s.create_errors for s in watchers]
    for side, tried in zip(watchers, attempts, strict=True):
        side.create_posts = rest * tried // max(1, sum(attempts))
    if watchers:
        watchers[0].create_posts += rest - sum(s.create_posts for s in watchers)


def schedule_window(sides: list[Side], plan: Plan, actor: Actor) -> None:
    """Latency plan: payment i of every side at t0 + offsets[i], t0 = now."""
    t0 = time.time()
    for i, offset in enumerate(plan.offsets):
        for side in sides:
            pid = side.ids.get(i)
            action = plan.actions[i]
            if pid is not None and action is not None:
                actor.add(t0 + offset, side, pid, action)


def outstanding(sides: list[Side]) -> int:
    for side in sides:
        side.refresh()
    return sum(len(side.undetected()) for side in sides)


def drain(sides: list[Side], stack: Stack, timeout: float) -> None:
    """Until every payment that must end was reported on every side, or the deadline."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = outstanding(sides)
        if not left:
            return
        if not stack.celery_alive() and any(isinstance(s, WatcherSide) for s in sides):
            log("a Celery or API process died; stopping the drain early")
            return
        if time.monotonic() > next_report:
            next_report += 30
            log(f"waiting for {left} reports ({deadline - time.monotonic():.0f}s left)")
        time.sleep(0.2)


def note_expiry(sides: list[Side], stack: Stack) -> None:
    """The simulator's expiry instant of every payment left to expire."""
    for side in sides:
        for pid in side.checked():
            if side.expected[pid] != "expired" or pid in side.acted_at:
                continue
            try:
                raw = stack.control("GET", f"/payments/{pid}")
                side.expires_at[pid] = datetime.fromisoformat(raw["sim"]["expires_at"]).timestamp()
            except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
                log(f"{side.name}: no expiry instant for {pid}: {exc}")


def run_phase(
    label: str, sides: list[Side], stack: Stack, plan: Plan, params: Params, rng: random.Random
) -> PhaseInfo:
    """Create on every side (settling to plan meanwhile for the mix), then settle/fail to
    plan, then drain until everything that must end was reported."""
    info = PhaseInfo(label)
    actor = Actor(stack, info, rng).start()
    try:
        create_all(label, sides, stack, params, plan, actor, info)
        log(f"{label}: created in {info.create_seconds:.1f}s")
        if not plan.from_creation:
            schedule_window(sides, plan, actor)
            log(f"{label}: settling over {params.duration:.0f}s")
        last = actor.last_due()
        actor.close()
        actor.join(max(0.0, last - time.time()) + 120)
    finally:
        actor.close()
    timeout = params.drain_timeout
    if plan.from_creation and any(side.created_at for side in sides):
        last_expiry = max(max(side.created_at.values(), default=0.0) for side in sides) + (
            params.expiration or 0
        )
        timeout += max(0.0, last_expiry - time.time())
    log(f"{label}: {actor.done} settles/fails done; waiting up to {timeout:.0f}s for reports")
    drain(sides, stack, timeout)
    finish_phase(sides, stack, plan, info)
    log(f"{label}: done")
    return info


def finish_phase(sides: list[Side], stack: Stack, plan: Plan, info: PhaseInfo) -> None:
    end = time.time()
    for side in sides:
        side.refresh()
        side.ended = end
        if isinstance(side, NaiveSide):
            side.stop()
    info.stats = stack.stats()
    for side in sides:
        if isinstance(side, WatcherSide):
            info.counters[side.name] = side.rt.store.counters()
    if plan.from_creation:
        note_expiry(sides, stack)


# --- main -------------------------------------------------------------------------------------


def parse_shares(text: str) -> tuple[float, float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 4 or any(not 0 <= x <= 1 for x in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            "four shares within 0..1 that add up to 1: paid early, paid late, expired, failed"
        )
    return parts[0], parts[1], parts[2], parts[3]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.detection",
        description="Detection latency at a subscriber and Voltage requests: watcher vs a "
        "naive 2 s poller.",
    )
    add = parser.add_argument
    add("--payments", type=int, default=None, help="per side (default 200)")
    add(
        "--create-over",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"pace the creates over this long (default {CREATE_SECONDS_PER_PAYMENT:g} s per "
        "payment: 60 s for 1,000; 0 = as fast as the threads go)",
    )
    add("--create-threads", type=int, default=8)
    add("--settle-share", type=float, default=0.7)
    add("--fail-share", type=float, default=0.05, help="of N, fail instead")
    add(
        "--duration",
        type=float,
        default=None,
        help="settle window in seconds after the creates (default 120, --quick 18)",
    )
    add(
        "--drain-timeout",
        type=float,
        default=None,
        help="after the window (--mix: after the last expiry), wait at most this long for "
        "reports (default 30)",
    )
    add("--seed", type=int, default=None)
    add(
        "--quick",
        action="store_true",
        help="smoke run: N=30 and an 18 s window; with --mix: N=40 and expiration 90 s",
    )
    add("--mode", choices=("concurrent", "sequential"), default="concurrent")
    add(
        "--hint",
        action="store_true",
        help="add a side: a second watcher deployment told by signed Voltage webhooks right "
        "after each settle/fail (its own Redis db, worker, beat, `watcher api`)",
    )
    add(
        "--mix",
        action="store_true",
        help="realistic mix instead of the settle window: paid within a minute, paid later, "
        "never paid (expire), failed",
    )
    add(
        "--expiration",
        type=int,
        default=None,
        help=f"invoice expiration in seconds (--mix: default 240, --quick 90, at least "
        f"{MIN_EXPIRATION}; otherwise Voltage's default)",
    )
    add(
        "--mix-shares",
        type=parse_shares,
        default=DEFAULT_MIX_SHARES,
        metavar="EARLY,LATE,EXPIRED,FAILED",
        help="--mix: shares of payments paid within 60 s, paid later, never paid, failed "
        f"(default {','.join(f'{x:g}' for x in DEFAULT_MIX_SHARES)})",
    )
    add("--naive-interval", type=float, default=2.0)
    add("--naive-threads", type=int, default=None, help="default: enough for N (N/40, >= 8)")
    add(
        "--worker-concurrency",
        type=int,
        default=None,
        help="override the Procfile worker's concurrency (default: one child per CPU)",
    )
    add("--poll-schedule", default=None, help="override WATCHER_POLL_SCHEDULE")
    add("--sweep-interval", default=None, help="override WATCHER_SWEEP_INTERVAL")
    add("--dispatch-interval", default=None, help="override WATCHER_DISPATCH_INTERVAL")
    add("--keep", action="store_true", help="keep the temp dir (logs)")
    add("--json", type=Path, default=None, metavar="PATH", help="also write the headline numbers")
    return parser


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mix:
        payments = args.payments or (40 if args.quick else 200)
        expiration = args.expiration or (90 if args.quick else 240)
        drain = args.drain_timeout or (20.0 if args.quick else 30.0)
        if not MIN_EXPIRATION <= expiration <= 86400:
            parser.error(f"--expiration must be {MIN_EXPIRATION}..86400 seconds")
    else:
        payments = args.payments or (30 if args.quick else 200)
        expiration = args.expiration
        drain = args.drain_timeout or (15.0 if args.quick else 30.0)
        if expiration is not None and not 1 <= expiration <= 86400:
            parser.error("--expiration must be 1..86400 seconds")
    if payments < 1 or not 0 <= args.settle_share <= 1 or not 0 <= args.fail_share <= 1:
        parser.error("need --payments >= 1 and shares within 0..1")
    if args.settle_share + args.fail_share > 1:
        parser.error("--settle-share + --fail-share must not exceed 1")
    create_over = args.create_over
    if create_over is None:
        create_over = CREATE_SECONDS_PER_PAYMENT * payments
    if create_over < 0 or args.create_threads < 1:
        parser.error("--create-over must be >= 0 and --create-threads >= 1")
    if args.worker_concurrency is not None and args.worker_concurrency < 1:
        parser.error("--worker-concurrency must be >= 1")
    return Params(
        payments=payments,
        settle_share=args.settle_share,
        fail_share=args.fail_share,
        duration=args.duration or (18.0 if args.quick else 120.0),
        drain_timeout=drain,
        seed=args.seed if args.seed is not None else random.randrange(1, 1_000_000),
        mode=args.mode,
        naive_interval=args.naive_interval,
        naive_threads=args.naive_threads or naive_threads(payments),
        worker_concurrency=args.worker_concurrency,
        create_threads=args.create_threads,
        create_over=create_over,
        poll_schedule=args.poll_schedule,
        sweep_interval=args.sweep_interval,
        dispatch_interval=args.dispatch_interval,
        keep=args.keep,
        hint=args.hint,
        mix=args.mix,
        expiration=expiration,
        mix_shares=args.mix_shares,
        json_path=args.json,
    )


def make_sides(params: Params, stack: Stack) -> tuple[list[Side], NaiveSide]:
    watcher = stack.watcher
    watchers: list[Side] = [
        WatcherSide(params.payments, stack.rt, stack.receiver, watcher.path, params.expiration)
    ]
    if params.hint:
        hint = stack.deployment("hint")
        watchers.append(
            HintSide(
                params.payments,
                hint.rt,
                stack.receiver,
                hint.path,
                hint.api_url,
                params.expiration,
            )
        )
    naive = NaiveSide(
        params.payments,
        stack.base_url,
        stack.payments_url,
        params.naive_interval,
        params.naive_threads,
        params.expiration,
    )
    return [*watchers, naive], naive


def run(params: Params, stack: Stack, sides: list[Side], naive: NaiveSide) -> list[PhaseInfo]:
    rng = random.Random(params.seed)
    plan = make_plan(params, rng)
    watchers = [s for s in sides if s is not naive]
    if params.mode == "concurrent":
        naive.loop.start()
        return [run_phase("run", sides, stack, plan, params, rng)]
    phases = [run_phase("watcher phase", watchers, stack, plan, params, rng)]
    stack.stop_celery()
    naive.loop.start()
    phases.append(run_phase("naive phase", [naive], stack, plan, params, rng))
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    exit_on_sigterm()
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-"))
    stack = Stack(params, tmp)
    sides: list[Side] = []
    started = time.time()
    failed = True
    try:
        log(
            f"temp dir {tmp}; starting redis, simulator, receiver, celery worker and beat"
            + (" (x2) and the API" if params.hint else "")
        )
        stack.start()
        stack.start_celery()
        sides, naive = make_sides(params, stack)
        phases = run(params, stack, sides, naive)
        values = report(params, stack, sides, phases, started, load_before)
        if params.json_path is not None:
            write_json(params.json_path, values)
        failed = False
        return 1 if values["problems"] else 0
    finally:
        for side in sides:
            if isinstance(side, NaiveSide):
                side.stop()
            if isinstance(side, HintSide):
                side.close()
        if failed:
            log_tails(stack.children())
        stack.stop()
        remove_or_keep(tmp, keep=params.keep, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
