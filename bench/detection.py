"""Detection latency at a subscriber and Voltage requests: watcher vs a naive 2 s poller.

What it runs and prints: bench/README.md (`bench.detection`); the report: `detection_report`."""

from __future__ import annotations

import argparse
import random
import sched
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from datetime import datetime
from typing import Any

import requests

from bench import harness as h
from bench import report as rep
from bench.detection_sides import (
    BEFORE_EXPIRY,
    CLASSES,
    EARLY_OFFSETS,
    LATE_FROM,
    MIX_CLASSES,
    HintSide,
    NaiveSide,
    Side,
    WatcherSide,
    mix_counts,
)
from bench.harness import Stack
from bench.naive import naive_threads
from bench.receiver import Receiver

CREATE_SECONDS_PER_PAYMENT = 0.06  # the default pacing: 1,000 payments over 60 s
ACT_THREADS = 4
DEFAULT_MIX_SHARES = (0.55, 0.15, 0.25, 0.05)
MIN_EXPIRATION = 80


def parse_shares(text: str) -> tuple[float, ...]:
    parts = tuple(float(x) for x in text.split(","))
    if len(parts) != 4 or any(not 0 <= x <= 1 for x in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            "four shares within 0..1 that add up to 1: paid early, paid late, expired, failed"
        )
    return parts


def parse_args(argv: Sequence[str] | None) -> Any:
    p = rep.parser(
        "bench.detection",
        "Detection latency at a subscriber and Voltage requests: watcher vs a naive 2 s poller.",
        "smoke run: N=30 and an 18 s window; with --mix: N=40 and expiration 90 s",
    )
    rep.options(
        p,
        ("--payments", int, None, "per side (default 200)"),
        ("--create-over", float, None, "pace the creates over this many s (default 0.06 s each)"),
        ("--create-threads", int, 8, None),
        ("--settle-share", float, 0.7, None),
        ("--fail-share", float, 0.05, "of N, fail instead"),
        ("--duration", float, None, "settle window in seconds (default 120, --quick 18)"),
        ("--drain-timeout", float, None, "then (--mix: after the last expiry) wait this long"),
        ("--seed", int, None, None),
        ("--mode", ("concurrent", "sequential"), "concurrent", None),
        ("--hint", "store_true", False, "add a watcher told by signed Voltage webhooks"),
        ("--mix", "store_true", False, "realistic mix: paid early, paid late, expired, failed"),
        ("--expiration", int, None, "invoice expiration in s (--mix: 240, --quick 90, >= 80)"),
        ("--mix-shares", parse_shares, DEFAULT_MIX_SHARES, "EARLY,LATE,EXPIRED,FAILED shares"),
        ("--naive-interval", float, 2.0, None),
        ("--naive-threads", int, None, "default: enough for N (N/40, >= 8)"),
        ("--worker-concurrency", int, None, "override the Procfile's (one child per CPU)"),
        ("--poll-schedule", str, None, "override WATCHER_POLL_SCHEDULE"),
        ("--sweep-interval", str, None, "override WATCHER_SWEEP_INTERVAL"),
        ("--dispatch-interval", str, None, "override WATCHER_DISPATCH_INTERVAL"),
    )
    a = p.parse_args(argv)
    a.payments = a.payments or (40 if a.mix and a.quick else 30 if a.quick else 200)
    if a.mix:
        a.expiration = a.expiration or (90 if a.quick else 240)
    low = MIN_EXPIRATION if a.mix else 1
    if a.create_over is None:
        a.create_over = CREATE_SECONDS_PER_PAYMENT * a.payments
    if a.expiration is not None and not low <= a.expiration <= 86400:
        p.error(f"--expiration must be {low}..86400 seconds")
    if a.payments < 1 or not 0 <= a.settle_share <= 1 or not 0 <= a.fail_share <= 1:
        p.error("need --payments >= 1 and shares within 0..1")
    if a.settle_share + a.fail_share > 1:
        p.error("--settle-share + --fail-share must not exceed 1")
    if a.create_over < 0 or a.create_threads < 1:
        p.error("--create-over must be >= 0 and --create-threads >= 1")
    if a.worker_concurrency is not None and a.worker_concurrency < 1:
        p.error("--worker-concurrency must be >= 1")
    a.drain_timeout = a.drain_timeout or ((20.0 if a.mix else 15.0) if a.quick else 30.0)
    a.duration = a.duration or (18.0 if a.quick else 120.0)
    a.seed = a.seed if a.seed is not None else random.randrange(1, 1_000_000)
    a.naive_threads = a.naive_threads or naive_threads(a.payments)
    return a


def make_plan(a: Any, rng: random.Random) -> tuple[list[float], list[str]]:
    """Index-aligned for every side: payment i is of classes[i], acted on at offsets[i]."""
    n = a.payments
    if not a.mix:
        settle_n = round(n * a.settle_share)
        fail_n = min(round(n * a.fail_share), n - settle_n)
        classes = ["untouched"] * n
        for position, index in enumerate(rng.sample(range(n), settle_n + fail_n)):
            classes[index] = "settled" if position < settle_n else "failed"
        return [rng.uniform(0.0, a.duration) for _ in range(n)], classes
    counts = mix_counts(n, a.mix_shares)
    classes = [name for name, c in zip(MIX_CLASSES, counts, strict=True) for _ in range(c)]
    rng.shuffle(classes)
    e = float(a.expiration)
    ranges = {"paid_early": EARLY_OFFSETS, "paid_late": (LATE_FROM, e - BEFORE_EXPIRY),
              "failed": (1.0, e - BEFORE_EXPIRY)}  # fmt: skip
    return [rng.uniform(*ranges[c]) if c in ranges else e for c in classes], classes


class Actor:
    """The settle/fail calls at their planned instants (ties in random order), from a pool."""

    def __init__(self, stack: Stack, info: dict[str, Any], rng: random.Random) -> None:
        self.stack, self.info, self.rng, self.done, self.closed = stack, info, rng, 0, False
        self.lock, self.pool = threading.Lock(), ThreadPoolExecutor(ACT_THREADS, "act")
        self.plan = sched.scheduler(time.time, lambda s: time.sleep(min(s, 0.01)))
        self.thread = threading.Thread(target=self._run, name="actor", daemon=True)
        self.thread.start()

    def add(self, due: float, side: Side, pid: str, action: str) -> None:
        args = (self._act, due, side, pid, action)
        self.plan.enterabs(due, self.rng.random(), self.pool.submit, args)

    def _run(self) -> None:
        while not (self.closed and self.plan.empty()):
            self.plan.run()
            time.sleep(0.01)

    def close_and_join(self, extra: float) -> None:
        """Until every call was made, or `extra` seconds after the last one was due."""
        last = max((e.time for e in self.plan.queue), default=time.time())
        self.closed, timeout = True, max(0.0, last - time.time()) + extra
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"settle/fail calls still running after {timeout:.0f}s")
        self.pool.shutdown(wait=True)

    def _act(self, due: float, side: Side, pid: str, action: str) -> None:
        with self.lock:
            late = self.info["settle_lateness_max"]
            self.info["settle_lateness_max"] = max(late, time.time() - due)
        try:
            payment = self.stack.sim("POST", f"/payments/{pid}/{action}")
        except requests.RequestException as exc:
            side.act_failed.add(pid)
            rep.log(f"{side.name}: {action} {pid} failed: {exc}")
            return
        side.acted_at[pid] = time.time()
        side.after_act(action, payment)
        with self.lock:
            self.done += 1


def create_all(sides: list[Side], a: Any, plan: Any, actor: Actor, info: dict[str, Any]) -> None:
    """Payment i on every side, interleaved, each create at its paced instant."""
    offsets, classes = plan
    jobs = [(side, i) for i in range(a.payments) for side in sides]
    spacing, began, lock = a.create_over / max(1, len(jobs)), time.time(), threading.Lock()

    def work(k: int) -> None:
        while (wait := began + k * spacing - time.time()) > 0:
            time.sleep(min(wait, 0.05))
        with lock:
            info["create_lag_max"] = max(info["create_lag_max"], -wait)
        side, i = jobs[k]
        try:
            pid = side.create(i)
        except Exception as exc:
            side.create_errors += 1
            rep.log(f"{side.name}: create {i} failed: {type(exc).__name__}: {exc}")
            return
        side.ids[i], side.created_at[pid], side.classes[pid] = pid, time.time(), classes[i]
        if a.mix and (action := CLASSES[classes[i]][2]):
            actor.add(side.created_at[pid] + offsets[i], side, pid, action)

    # Each create is bounded (HTTP timeouts, a 10 s invoice wait), so this is too.
    deadline = a.create_over + 30 * -(-len(jobs) // a.create_threads) + 60
    pool = ThreadPoolExecutor(a.create_threads, "create")
    done, late = wait_all([pool.submit(work, k) for k in range(len(jobs))], deadline)
    pool.shutdown(wait=not late, cancel_futures=True)
    if late:
        raise RuntimeError("creates did not finish before their deadline")
    for future in done:
        future.result()  # a create's own failure is counted; anything else is a bug: raise it


def run_phase(label: str, sides: list[Side], stack: Stack, a: Any, plan: Any,
              rng: random.Random) -> dict[str, Any]:  # fmt: skip
    """Create (the mix settles meanwhile), settle/fail to plan, drain until all is reported."""
    info: dict[str, Any] = {"label": label, "settle_lateness_max": 0.0, "create_lag_max": 0.0}
    for side in sides:
        side.started, side.phase = time.time(), label
    posts_before = stack.sim("GET", "/stats")["by_route"].get("POST /payments", 0)
    names = " and ".join(s.name for s in sides)
    rep.log(f"{label}: creating {a.payments} payments on {names} over {a.create_over:g}s")
    actor, began = Actor(stack, info, rng), time.monotonic()
    try:
        create_all(sides, a, plan, actor, info)
        info["create_seconds"] = time.monotonic() - began
        rep.log(f"{label}: created in {info['create_seconds']:.1f}s")
        share_create_posts(sides, stack, posts_before, info)
        if not a.mix:  # the latency plan: payment i of every side at t0 + offsets[i]
            t0 = time.time()
            for i, (offset, name) in enumerate(zip(*plan, strict=True)):
                for side in sides:
                    if (pid := side.ids.get(i)) is not None and (action := CLASSES[name][2]):
                        actor.add(t0 + offset, side, pid, action)
            rep.log(f"{label}: settling over {a.duration:.0f}s")
    finally:
        actor.close_and_join(120)
    timeout = a.drain_timeout
    if a.mix and any(s.created_at for s in sides):
        last = max(max(s.created_at.values(), default=0.0) for s in sides) + a.expiration
        timeout += max(0.0, last - time.time())
    rep.log(f"{label}: {actor.done} settles/fails done; waiting up to {timeout:.0f}s for reports")
    deadline, next_report = time.monotonic() + timeout, time.monotonic() + 30
    while time.monotonic() < deadline:  # until every side reported all that must end
        for side in sides:
            side.refresh()
        if not (left := sum(len(side.undetected()) for side in sides)):
            break
        if isinstance(sides[0], WatcherSide) and not all(c.alive for c in stack.children):
            rep.log("a Celery or API process died; stopping the drain early")
            break
        if time.monotonic() > next_report:
            next_report += 30
            rep.log(f"waiting for {left} reports ({deadline - time.monotonic():.0f}s left)")
        time.sleep(0.2)
    finish_phase(sides, stack, a, info)
    rep.log(f"{label}: done")
    return info


def share_create_posts(sides: list[Side], stack: Stack, before: int, info: dict[str, Any]) -> None:
    """The naive client counts its POSTs; the watchers share the rest by creates attempted."""
    posts = stack.sim("GET", "/stats")["by_route"].get("POST /payments", 0) - before
    info["posts_during_creates"] = posts
    for side in sides:
        side.finish_creates()
    watchers = [s for s in sides if isinstance(s, WatcherSide)]
    rest = posts - sum(s.create_posts for s in sides if s not in watchers)
    attempts = [len(s.ids) + s.create_errors for s in watchers]
    for side, tried in zip(watchers, attempts, strict=True):
        side.create_posts = rest * tried // max(1, sum(attempts))
    if watchers:
        watchers[0].create_posts += rest - sum(s.create_posts for s in watchers)


def finish_phase(sides: list[Side], stack: Stack, a: Any, info: dict[str, Any]) -> None:
    end = time.time()
    for side in sides:
        side.refresh()
        side.ended = end
        if isinstance(side, NaiveSide):
            side.close()
    info["stats"] = stack.sim("GET", "/stats")
    info["counters"] = {
        s.name: s.rt.payments.counters() for s in sides if isinstance(s, WatcherSide)
    }
    for side in sides if a.mix else ():  # the expiry instant of every payment left to expire
        for pid in side.checked():
            if side.want(pid) != "expired" or pid in side.acted_at:
                continue
            try:
                raw = stack.sim("GET", f"/payments/{pid}")
                side.expires_at[pid] = datetime.fromisoformat(raw["sim"]["expires_at"]).timestamp()
            except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
                rep.log(f"{side.name}: no expiry instant for {pid}: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    from bench.detection_report import report

    a, started = parse_args(argv), time.time()

    def body(stack: Stack) -> int:
        extra = " (x2) and the API" if a.hint else ""
        rep.log(f"starting redis, simulator, receiver, celery worker and beat{extra}")
        stack.start(generating_delay=0.05)
        receiver = Receiver().start()
        sides: list[Side] = []
        try:
            watchers = [(HintSide if db else WatcherSide)(stack, a, name, db, receiver)
                        for db, name in enumerate(["watcher", "hint"][: 1 + a.hint])]  # fmt: skip
            sides = [*watchers, naive := NaiveSide(a, stack)]
            for watcher in watchers:
                watcher.start(stack, a)
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
            values = report(a, stack, watchers[0].rt.settings, sides, phases, started)
        finally:
            for side in sides:
                side.close()
            receiver.stop()
        code = rep.finish(a, values, [])
        return 1 if values["problems"] else code

    return h.run_in_stack("detection", a, body)


if __name__ == "__main__":
    sys.exit(main())
