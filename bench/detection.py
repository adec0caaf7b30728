"""Detection latency and Voltage request cost: the watcher against a naive 2-second poller.

The script starts everything it needs on loopback, in a temporary directory: its own
redis-server, the Voltage simulator as a separate process, and one `celery -A watcher worker`
plus one `celery -A watcher beat` running the production poll schedule (unless flags say
otherwise). It then creates N receives twice:

* (a) **watcher**: with `create_and_watch`, so the Celery stack polls them and writes one
  outbox event per final transition. Detection time = the Redis XADD time of that event (the
  milliseconds in its stream id).
* (b) **naive**: with a plain `VoltageClient` (`submit_receive` + `wait_for_invoice`, on its
  own wallet id so the watcher's list sweeps never page through them), watched by a loop that
  GETs every pending payment every 2 seconds. Detection time = when a GET first answers final.

The same random plan applies to both sides: payment i of each side settles (or fails) at the
same offset, uniform over the settle window, through `POST /_sim/payments/{id}/settle|fail`.
Latency = detection time - the wall-clock time the settle/fail call answered. The rest stay
pending until the end. Voltage requests per payment come from the simulator's `GET /_sim/stats`
(per-payment GET counts by id, list calls, creates). Nothing about timing is asserted; the exit
status is 1 only if a settled/failed payment was never detected.

Run (from the project root):

    .venv/bin/python -m bench.detection                # N=200, 120 s window, ~2.5 minutes
    .venv/bin/python -m bench.detection --quick        # N=30, ~25 s smoke run
    .venv/bin/python -m bench.detection --mode sequential --poll-schedule 60:2,600:5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from watcher.engine.watching import create_and_watch
from watcher.logging import configure_logging
from watcher.redis_server import RedisServer, free_port
from watcher.runtime import Runtime
from watcher.settings import Settings, load_settings
from watcher.voltage.client import VoltageClient

API_KEY = "bench-sim-key-0123456789abcdef"
ORG_ID = "org-bench"
ENV_ID = "env-bench"
WATCHER_WALLET = "wallet-bench-watcher"
NAIVE_WALLET = "wallet-bench-naive"
FINAL = frozenset({"completed", "failed", "expired"})
EXPECTED = {"settle": "completed", "fail": "failed"}


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- parameters and the random plan -----------------------------------------------------------


@dataclass(frozen=True)
class Params:
    payments: int
    settle_share: float
    fail_share: float
    duration: float
    drain_timeout: float
    seed: int
    mode: str
    naive_interval: float
    naive_threads: int
    worker_concurrency: int
    create_threads: int
    poll_schedule: str | None
    sweep_interval: str | None
    dispatch_interval: str | None
    keep: bool


@dataclass(frozen=True)
class Plan:
    """Index-aligned for both sides: payment i settles/fails at offsets[i] (or never)."""

    offsets: list[float]
    actions: list[str | None]


def make_plan(params: Params, rng: random.Random) -> Plan:
    n = params.payments
    settle_n = round(n * params.settle_share)
    fail_n = min(round(n * params.fail_share), n - settle_n)
    chosen = rng.sample(range(n), settle_n + fail_n)
    actions: list[str | None] = [None] * n
    for position, index in enumerate(chosen):
        actions[index] = "settle" if position < settle_n else "fail"
    offsets = [rng.uniform(0.0, params.duration) for _ in range(n)]
    return Plan(offsets, actions)


# --- child processes --------------------------------------------------------------------------


class Child:
    """A child process in its own session, logging to a file; stopped by its process group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def child_env(values: dict[str, str]) -> dict[str, str]:
    """This environment minus any WATCHER_/VOLTAGE_ variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "VOLTAGE_"))}
    env.update(values)
    return env


def wait_for(
    what: str, condition: Callable[[], object], timeout: float, children: Sequence[Child] = ()
) -> None:
    """Poll `condition()` until truthy; fail after `timeout` or when a child has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive:
                raise RuntimeError(f"{child.name} exited while waiting for {what}:\n{child.tail()}")
        with contextlib.suppress(Exception):
            if condition():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the stack --------------------------------------------------------------------------------


class Stack:
    """redis-server + simulator process + Celery worker and beat, all ours, all on loopback."""

    def __init__(self, params: Params, tmp: Path) -> None:
        self.params = params
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis")
        self.sim_port = 0
        self.simulator: Child | None = None
        self.worker: Child | None = None
        self.beat: Child | None = None
        self.values: dict[str, str] = {}
        self.settings: Settings | None = None
        self.runtime: Runtime | None = None
        self.http = requests.Session()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> None:
        self.redis.start()
        self.sim_port = free_port()
        self.simulator = Child(
            "simulator",
            [
                sys.executable,
                "-m",
                "watcher",
                "simulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.sim_port),
                "--api-key",
                API_KEY,
                "--not-found-window",
                "0",
                "--generating-delay",
                "0.05",
            ],
            child_env({"WATCHER_LOG_LEVEL": "WARNING", "WATCHER_LOG_FORMAT": "json"}),
            self.tmp,
        ).start()
        wait_for(
            "the simulator",
            lambda: self.http.get(f"{self.root_url}/_sim/health", timeout=1).ok,
            timeout=30,
            children=[self.simulator],
        )
        data_dir = self.tmp / "data"
        data_dir.mkdir(exist_ok=True)
        self.values = {
            "WATCHER_REDIS_URL": self.redis.url,
            "VOLTAGE_API_URL": self.base_url,
            "VOLTAGE_API_KEY": API_KEY,
            "VOLTAGE_ORGANIZATION_ID": ORG_ID,
            "VOLTAGE_ENVIRONMENT_ID": ENV_ID,
            "VOLTAGE_WALLET_ID": WATCHER_WALLET,
            "WATCHER_DATA_DIR": str(data_dir),
            "WATCHER_LOG_FORMAT": "json",
            "WATCHER_LOG_LEVEL": "WARNING",
        }
        optional = {
            "WATCHER_POLL_SCHEDULE": self.params.poll_schedule,
            "WATCHER_SWEEP_INTERVAL": self.params.sweep_interval,
            "WATCHER_DISPATCH_INTERVAL": self.params.dispatch_interval,
        }
        self.values.update({k: v for k, v in optional.items() if v is not None})
        self.settings = load_settings(**{k.lower(): v for k, v in self.values.items()})
        configure_logging(self.settings)
        self.runtime = Runtime.from_settings(self.settings)

    def start_celery(self) -> None:
        env = child_env(self.values)
        celery = [sys.executable, "-m", "celery", "-A", "watcher"]
        self.worker = Child(
            "worker",
            [
                *celery,
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(self.params.worker_concurrency),
                "--without-mingle",
                "--without-gossip",
                "-n",
                "bench@%h",
            ],
            env,
            self.tmp,
        ).start()
        self.beat = Child(
            "beat", [*celery, "beat", "-s", str(self.tmp / "celerybeat-schedule")], env, self.tmp
        ).start()
        rt = self.rt
        wait_for(
            "the worker to run dispatcher ticks",
            lambda: rt.store.counters().get("dispatch_ticks", 0) >= 2,
            timeout=60,
            children=[self.worker, self.beat],
        )

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def celery_alive(self) -> bool:
        return all(c is not None and c.alive for c in (self.worker, self.beat))

    def stop_celery(self) -> None:
        for child in (self.beat, self.worker):
            if child is not None:
                child.stop()

    def stop(self) -> None:
        self.stop_celery()
        if self.simulator is not None:
            self.simulator.stop()
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                self.runtime.redis.close()
        self.redis.stop()
        self.http.close()

    # --- the simulator's control surface ---------------------------------------------------------
    def control(self, method: str, path: str) -> Any:
        response = self.http.request(method, f"{self.root_url}/_sim{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control("GET", "/stats")
        return stats


# --- the two sides ----------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    n: int
    ids: dict[int, str] = field(default_factory=dict)  # plan index -> payment id
    created_at: dict[str, float] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)  # payment id -> settle|fail
    acted_at: dict[str, float] = field(default_factory=dict)  # when the settle/fail answered
    act_errors: int = 0
    detected: dict[str, float] = field(default_factory=dict)
    detected_status: dict[str, str] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    create_errors: int = 0
    create_requests: int = 0  # every request the creating client sent (POST + GETs)
    create_posts: int = 0
    started: float = 0.0
    ended: float = 0.0

    def create(self, index: int) -> str:
        raise NotImplementedError

    def finish_creates(self) -> None:
        """Note how many requests the creates took (called once they are all done)."""

    def refresh(self) -> None:
        """Pick up detections (the naive loop records its own as it goes)."""

    @property
    def all_ids(self) -> set[str]:
        return set(self.ids.values())

    def undetected(self) -> list[str]:
        return [pid for pid in self.actions if pid in self.acted_at and pid not in self.detected]


class WatcherSide(Side):
    def __init__(self, n: int, rt: Runtime) -> None:
        super().__init__("watcher", n)
        self.rt = rt
        self._last_entry = "-"
        self._requests_before = rt.voltage.request_count

    def create(self, index: int) -> str:
        result = create_and_watch(
            self.rt,
            amount_msats=1_000 + index,
            description=f"bench watcher {index}",
            metadata={"bench": "watcher", "i": str(index)},
        )
        return result.record.id

    def finish_creates(self) -> None:
        self.create_requests = self.rt.voltage.request_count - self._requests_before

    def refresh(self) -> None:
        store = self.rt.store
        while True:
            low = "-" if self._last_entry == "-" else f"({self._last_entry}"
            entries: Any = store.redis.xrange(store.keys.outbox, min=low, count=500)
            if not entries:
                return
            ids = self.all_ids
            for entry_id, fields in entries:
                self._last_entry = entry_id
                pid = fields.get("payment_id", "")
                if pid not in ids:
                    continue
                self.events[pid] += 1
                if pid not in self.detected:
                    self.detected[pid] = int(entry_id.split("-")[0]) / 1000.0
                    self.detected_status[pid] = fields.get("type", "").removeprefix("payment.")


class NaiveSide(Side):
    """Creates with a plain VoltageClient; a loop GETs every pending payment each interval."""

    def __init__(self, n: int, base_url: str, interval: float, threads: int) -> None:
        super().__init__("naive", n)
        self.interval = interval
        self.posts_seen: Counter[str] = Counter()
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=32, max_retries=0)
        session.mount("http://", adapter)
        session.hooks["response"].append(self._count_response)
        self.client = VoltageClient(
            base_url=base_url,
            api_key=API_KEY,
            organization_id=ORG_ID,
            environment_id=ENV_ID,
            session=session,
        )
        self._session = session
        self.url_prefix = f"{base_url}/organizations/{ORG_ID}/environments/{ENV_ID}/payments/"
        self._lock = threading.Lock()
        self._pending: dict[str, None] = {}
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="naive-poll")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="naive-loop", daemon=True)
        self.gets = 0
        self.get_errors = 0
        self.rounds = 0
        self.overruns = 0
        self.longest_round = 0.0

    def _count_response(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        with self._lock:
            self.posts_seen[response.request.method or "?"] += 1

    def create(self, index: int) -> str:
        pid = self.client.submit_receive(
            wallet_id=NAIVE_WALLET,
            amount_msats=1_000 + index,
            description=f"bench naive {index}",
            metadata={"bench": "naive", "i": str(index)},
        )
        self.client.wait_for_invoice(pid, timeout=10)
        with self._lock:
            self._pending[pid] = None
        return pid

    def finish_creates(self) -> None:
        self.create_requests = self.client.request_count
        self.create_posts = self.posts_seen["POST"]

    # --- the naive loop ----------------------------------------------------------------------
    def start_loop(self) -> None:
        self._thread.start()

    @property
    def loop_stopped(self) -> bool:
        return self._stop.is_set()

    def stop_loop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for session in self._sessions:
            session.close()
        self.client.close()

    def _http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _check(self, pid: str) -> None:
        try:
            response = self._http().get(
                self.url_prefix + pid, headers={"x-api-key": API_KEY}, timeout=(3.05, 10)
            )
        except requests.RequestException:
            with self._lock:
                self.gets += 1
                self.get_errors += 1
            return
        seen = time.time()
        status = ""
        if response.status_code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                status = str(response.json().get("status", ""))
        with self._lock:
            self.gets += 1
            if response.status_code != 200:
                self.get_errors += 1
            elif status in FINAL and pid not in self.detected:
                self.detected[pid] = seen
                self.detected_status[pid] = status
                self.events[pid] += 1
                self._pending.pop(pid, None)

    def _loop(self) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                ids = list(self._pending)
            if ids:
                began = time.monotonic()
                list(self._pool.map(self._check, ids))
                self.rounds += 1
                self.longest_round = max(self.longest_round, time.monotonic() - began)
            next_round += self.interval
            now = time.monotonic()
            if now > next_round:
                self.overruns += 1
                next_round = now
            self._stop.wait(next_round - now)


# --- one measured phase -----------------------------------------------------------------------


@dataclass
class PhaseInfo:
    label: str
    settle_lateness_max: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    posts_during_creates: int = 0
    create_seconds: float = 0.0


def create_all(
    label: str, sides: list[Side], stack: Stack, params: Params, info: PhaseInfo
) -> None:
    """Create payment i on every side, interleaved, from a small thread pool."""
    now = time.time()
    for side in sides:
        side.started = now
    before = stack.stats()["by_route"].get("POST /payments", 0)
    log(f"{label}: creating {params.payments} payments on {' and '.join(s.name for s in sides)}")
    jobs = [(side, i) for i in range(params.payments) for side in sides]
    began = time.monotonic()

    def create(job: tuple[Side, int]) -> None:
        side, index = job
        try:
            pid = side.create(index)
        except Exception as exc:
            side.create_errors += 1
            log(f"{side.name}: create {index} failed: {type(exc).__name__}: {exc}")
            return
        side.ids[index] = pid
        side.created_at[pid] = time.time()

    with ThreadPoolExecutor(params.create_threads, thread_name_prefix="create") as pool:
        list(pool.map(create, jobs))
    info.create_seconds = time.monotonic() - began
    posts = stack.stats()["by_route"].get("POST /payments", 0) - before
    info.posts_during_creates = posts
    for side in sides:
        side.finish_creates()
    # The naive client counts its own POSTs; the rest of this window's POSTs are the watcher's.
    naive_posts = sum(s.create_posts for s in sides if isinstance(s, NaiveSide))
    for side in sides:
        if isinstance(side, WatcherSide):
            side.create_posts = posts - naive_posts


def settle_to_plan(
    sides: list[Side], stack: Stack, plan: Plan, rng: random.Random, info: PhaseInfo
) -> None:
    """From t0 = now, settle/fail payment i of every side at t0 + offsets[i] (pairs in random
    order), noting when each call answered."""
    t0 = time.time()
    events: list[tuple[float, float, Side, str, str]] = []
    for i, action in enumerate(plan.actions):
        if action is None:
            continue
        for side in sides:
            pid = side.ids.get(i)
            if pid is not None:
                side.actions[pid] = action
                events.append((t0 + plan.offsets[i], rng.random(), side, pid, action))
    events.sort(key=lambda e: (e[0], e[1]))
    for due, _, side, pid, action in events:
        while (wait := due - time.time()) > 0:  # sleeping until a fixed instant
            time.sleep(min(wait, 0.05))
        info.settle_lateness_max = max(info.settle_lateness_max, time.time() - due)
        try:
            stack.control("POST", f"/payments/{pid}/{action}")
        except requests.RequestException as exc:
            side.act_errors += 1
            log(f"{side.name}: {action} {pid} failed: {exc}")
            continue
        side.acted_at[pid] = time.time()


def drain(sides: list[Side], stack: Stack, timeout: float) -> None:
    """Until every settled/failed payment is detected, or the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for side in sides:
            side.refresh()
        if not any(side.undetected() for side in sides):
            return
        if not stack.celery_alive() and any(isinstance(s, WatcherSide) for s in sides):
            log("a Celery process died; stopping the drain early")
            return
        time.sleep(0.1)


def run_phase(
    label: str,
    sides: list[Side],
    stack: Stack,
    plan: Plan,
    params: Params,
    rng: random.Random,
) -> PhaseInfo:
    """Create on every side at once, then settle/fail to plan, then drain until detected."""
    info = PhaseInfo(label)
    create_all(label, sides, stack, params, info)
    log(f"{label}: created in {info.create_seconds:.1f}s; settling over {params.duration:.0f}s")
    settle_to_plan(sides, stack, plan, rng, info)
    log(f"{label}: last settle done; waiting up to {params.drain_timeout:.0f}s for detections")
    drain(sides, stack, params.drain_timeout)
    end = time.time()
    for side in sides:
        side.refresh()
        side.ended = end
        if isinstance(side, NaiveSide):
            side.stop_loop()
    info.stats = stack.stats()
    log(f"{label}: done")
    return info


# --- numbers ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def latencies_ms(side: Side, only: Iterable[str] | None = None) -> list[float]:
    ids = side.acted_at.keys() if only is None else only
    return [
        (side.detected[pid] - side.acted_at[pid]) * 1000.0
        for pid in ids
        if pid in side.detected and pid in side.acted_at
    ]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


@dataclass
class Cost:
    total: int
    creates: int
    watching: int
    per_payment_gets: int
    list_calls: int
    pending_minutes: float


def cost_of(side: Side, stats: dict[str, Any], list_calls: int) -> Cost:
    per_payment: dict[str, int] = stats.get("per_payment", {})
    gets = sum(per_payment.get(pid, 0) for pid in side.all_ids)
    create_gets = side.create_requests - side.create_posts
    watching = gets - create_gets + list_calls
    minutes = 0.0
    for pid, created in side.created_at.items():
        minutes += max(0.0, side.detected.get(pid, side.ended) - created) / 60.0
    return Cost(
        total=gets + list_calls + side.create_posts,
        creates=side.create_requests,
        watching=watching,
        per_payment_gets=gets,
        list_calls=list_calls,
        pending_minutes=minutes,
    )


def side_rows(side: Side, cost: Cost, stats_label: str) -> list[tuple[str, str]]:
    lat = latencies_ms(side)
    settled = sum(1 for pid, a in side.actions.items() if a == "settle" and pid in side.acted_at)
    failed = sum(1 for pid, a in side.actions.items() if a == "fail" and pid in side.acted_at)
    acted = [pid for pid in side.actions if pid in side.acted_at]
    detected = sum(1 for pid in acted if pid in side.detected)
    wrong = sum(
        1
        for pid in acted
        if pid in side.detected and side.detected_status.get(pid) != EXPECTED[side.actions[pid]]
    )
    unexpected = sum(1 for pid in side.detected if pid not in side.acted_at)
    duplicates = sum(1 for count in side.events.values() if count > 1)
    n = max(1, len(side.ids))
    polls = cost.watching - cost.list_calls
    return [
        (
            "payments created",
            f"{len(side.ids)}" + (f" ({side.create_errors} failed)" * bool(side.create_errors)),
        ),
        ("settled (completed)", str(settled)),
        ("failed on purpose", str(failed)),
        ("detected", str(detected)),
        ("missed", str(len(acted) - detected)),
        ("wrong final status", str(wrong)),
        ("events for untouched payments", str(unexpected)),
        ("payments with duplicate events", str(duplicates)),
        ("latency p50 (ms)", fmt(percentile(lat, 50))),
        ("latency p95 (ms)", fmt(percentile(lat, 95))),
        ("latency p99 (ms)", fmt(percentile(lat, 99))),
        ("latency max (ms)", fmt(max(lat) if lat else None)),
        ("latency mean (ms)", fmt(sum(lat) / len(lat) if lat else None)),
        ("latency min (ms)", fmt(min(lat) if lat else None)),
        ("Voltage requests total", str(cost.total)),
        ("  requests / payment (total)", fmt(cost.total / n, 2)),
        ("  creates / payment (POST+invoice GETs)", fmt(cost.creates / n, 2)),
        ("  watching / payment (GETs + lists)", fmt(cost.watching / n, 2)),
        ("  of which list calls (GET /payments)", str(cost.list_calls)),
        ("pending payment-minutes", fmt(cost.pending_minutes, 1)),
        (
            "mean s between GETs of a pending payment",
            fmt(cost.pending_minutes * 60 / polls, 2) if polls else "-",
        ),
        (
            "watching requests / pending-payment-minute",
            fmt(cost.watching / cost.pending_minutes, 1) if cost.pending_minutes else "-",
        ),
        ("run duration (s)", fmt(side.ended - side.started, 1)),
        ("stats snapshot", stats_label),
    ]


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]
    print(title)
    line = "  ".join(
        h.ljust(widths[c]) if c == 0 else h.rjust(widths[c]) for c, h in enumerate(headers)
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                v.ljust(widths[c]) if c == 0 else v.rjust(widths[c]) for c, v in enumerate(row)
            )
        )
    print()


def age_split(side: Side, threshold: float) -> tuple[list[float], list[float]]:
    young = [pid for pid in side.acted_at if side.acted_at[pid] - side.created_at[pid] < threshold]
    old = [pid for pid in side.acted_at if side.acted_at[pid] - side.created_at[pid] >= threshold]
    return latencies_ms(side, young), latencies_ms(side, old)


def report(
    params: Params,
    stack: Stack,
    watcher: WatcherSide,
    naive: NaiveSide,
    phases: list[PhaseInfo],
    started: float,
    load_before: str,
) -> None:
    settings = stack.settings
    assert settings is not None
    w_stats = phases[0].stats
    n_stats = phases[-1].stats
    list_calls = int(w_stats.get("by_route", {}).get("GET /payments", 0))
    w_cost = cost_of(watcher, w_stats, list_calls)
    n_cost = cost_of(naive, n_stats, 0)

    print()
    print("=== voltage-watcher detection benchmark ===")
    redis_version = stack.rt.redis.info("server").get("redis_version", "?")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"machine: nproc={affinity} (cpu_count={os.cpu_count()}), "
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"redis-server {redis_version}, load avg before run {load_before}"
    )
    mode = (
        "concurrent: both sides created, settled and watched in the same time window"
        if params.mode == "concurrent"
        else "sequential: watcher phase, then Celery stopped, then naive phase (same simulator)"
    )
    print(f"mode: {mode}")
    print(
        f"parameters: payments={params.payments} per side, settle_share={params.settle_share}, "
        f"fail_share={params.fail_share}, settle window={params.duration:.0f}s (uniform, same "
        f"offsets for both sides), drain timeout={params.drain_timeout:.0f}s, seed={params.seed}"
    )
    schedule = ",".join(f"{a:g}:{b:g}" for a, b in settings.watcher_poll_schedule)
    print(
        f"watcher: WATCHER_POLL_SCHEDULE={schedule}"
        f"{'' if params.poll_schedule else ' (default)'}, "
        f"WATCHER_DISPATCH_INTERVAL={settings.watcher_dispatch_interval:g}"
        f"{'' if params.dispatch_interval else ' (default)'}, "
        f"WATCHER_SWEEP_INTERVAL={settings.watcher_sweep_interval:g}"
        f"{'' if params.sweep_interval else ' (default)'}, "
        f"generating poll {settings.watcher_generating_poll_interval:g}s, "
        f"poll chunk {settings.watcher_poll_chunk}, worker --pool threads --concurrency "
        f"{params.worker_concurrency}"
    )
    print(
        f"naive: GET every pending payment every {params.naive_interval:g}s "
        f"({params.naive_threads} threads, plain requests.Session), wallet {NAIVE_WALLET}"
    )
    print(
        "simulator: separate process, --not-found-window 0 --generating-delay 0.05; "
        "latency = detection (watcher: outbox XADD ms; naive: first final GET answer) "
        "- settle/fail answer"
    )
    print()

    w_rows = side_rows(watcher, w_cost, phases[0].label)
    n_rows = side_rows(naive, n_cost, phases[-1].label)
    print_table(
        "Results",
        ["", "watcher", "naive"],
        [[label, w, n_rows[i][1]] for i, (label, w) in enumerate(w_rows)],
    )

    threshold = settings.watcher_poll_schedule[0][0]
    rows = []
    for side in (watcher, naive):
        young, old = age_split(side, threshold)
        for name, lat in ((f"age < {threshold:g}s", young), (f"age >= {threshold:g}s", old)):
            rows.append(
                [
                    f"{side.name}, {name} at settle",
                    str(len(lat)),
                    fmt(percentile(lat, 50)),
                    fmt(percentile(lat, 95)),
                    fmt(max(lat) if lat else None),
                ]
            )
    print_table(
        "Latency by payment age at settle (watcher's first schedule step)",
        ["", "count", "p50 ms", "p95 ms", "max ms"],
        rows,
    )

    counters = stack.rt.store.counters()
    poll_counts = []
    for pid in watcher.all_ids:
        record = stack.rt.store.get(pid)
        if record is not None:
            poll_counts.append(record.poll_count)
    create_gets = watcher.create_requests - watcher.create_posts
    print("Diagnostics")
    print("  watcher counters: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    print(
        f"  watcher: GETs of its ids={w_cost.per_payment_gets} (create-time {create_gets}, "
        f"polls {w_cost.per_payment_gets - create_gets}); sum of records' poll_count="
        f"{sum(poll_counts)}; list calls={list_calls}; creates: {watcher.create_posts} POSTs, "
        f"{watcher.create_requests} requests"
    )
    print(
        f"  naive: loop GETs={naive.gets} (errors {naive.get_errors}), rounds={naive.rounds}, "
        f"overruns={naive.overruns}, longest round={naive.longest_round:.2f}s; per_payment GETs "
        f"of its ids={n_cost.per_payment_gets}; creates: {naive.create_posts} POSTs, "
        f"{naive.create_requests} requests"
    )
    for phase in phases:
        print(
            f"  {phase.label}: creates took {phase.create_seconds:.1f}s "
            f"({phase.posts_during_creates} POSTs), latest settle call "
            f"{phase.settle_lateness_max * 1000:.0f} ms behind plan"
        )
    final = phases[-1].stats
    print(f"  simulator by_route: {json.dumps(final.get('by_route', {}), sort_keys=True)}")
    print(f"  simulator by_status: {json.dumps(final.get('by_status', {}), sort_keys=True)}")
    worst = sorted(
        ((side.detected[p] - side.acted_at[p]) * 1000, side.name, p)
        for side in (watcher, naive)
        for p in side.acted_at
        if p in side.detected
    )[-5:]
    print("  slowest detections: " + "; ".join(f"{s} {p[:8]} {ms:,.0f} ms" for ms, s, p in worst))
    for side in (watcher, naive):
        for pid in side.undetected():
            print(f"  MISSED: {side.name} {pid} ({side.actions[pid]})")
    print(f"  total wall time: {time.time() - started:.1f}s")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(
        prog="python -m bench.detection",
        description="Detection latency and Voltage requests: watcher vs a naive 2 s poller.",
    )
    parser.add_argument("--payments", type=int, default=None, help="per side (default 200)")
    parser.add_argument("--settle-share", type=float, default=0.7)
    parser.add_argument("--fail-share", type=float, default=0.05, help="of N, fail instead")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="settle window in seconds: settles are uniform over it (default 120, so about "
        "half of them happen after the poll schedule's first 60 s step)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="after the window, wait at most this long for detections (default 30)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N=30 and an 18 s window (~25 s in all)"
    )
    parser.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent")
    parser.add_argument("--naive-interval", type=float, default=2.0)
    parser.add_argument("--naive-threads", type=int, default=8)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--poll-schedule", default=None, help="WATCHER_POLL_SCHEDULE")
    parser.add_argument("--sweep-interval", default=None, help="WATCHER_SWEEP_INTERVAL")
    parser.add_argument("--dispatch-interval", default=None, help="WATCHER_DISPATCH_INTERVAL")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    payments = args.payments or (30 if args.quick else 200)
    duration = args.duration or (18.0 if args.quick else 120.0)
    drain = args.drain_timeout or (15.0 if args.quick else 30.0)
    if payments < 1 or not 0 <= args.settle_share <= 1 or not 0 <= args.fail_share <= 1:
        parser.error("need --payments >= 1 and shares within 0..1")
    if args.settle_share + args.fail_share > 1:
        parser.error("--settle-share + --fail-share must not exceed 1")
    return Params(
        payments=payments,
        settle_share=args.settle_share,
        fail_share=args.fail_share,
        duration=duration,
        drain_timeout=drain,
        seed=args.seed if args.seed is not None else random.randrange(1, 1_000_000),
        mode=args.mode,
        naive_interval=args.naive_interval,
        naive_threads=args.naive_threads,
        worker_concurrency=args.worker_concurrency,
        create_threads=args.create_threads,
        poll_schedule=args.poll_schedule,
        sweep_interval=args.sweep_interval,
        dispatch_interval=args.dispatch_interval,
        keep=args.keep,
    )


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    load_before = "?"
    with contextlib.suppress(OSError):
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rng = random.Random(params.seed)
    plan = make_plan(params, rng)
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-"))
    stack = Stack(params, tmp)
    naive: NaiveSide | None = None
    started = time.time()
    failed = True
    try:
        log(f"temp dir {tmp}; starting redis, simulator, celery worker and beat")
        stack.start()
        stack.start_celery()
        watcher = WatcherSide(params.payments, stack.rt)
        naive = NaiveSide(
            params.payments, stack.base_url, params.naive_interval, params.naive_threads
        )
        phases: list[PhaseInfo] = []
        if params.mode == "concurrent":
            naive.start_loop()
            phases.append(run_phase("run", [watcher, naive], stack, plan, params, rng))
        else:
            phases.append(run_phase("watcher phase", [watcher], stack, plan, params, rng))
            stack.stop_celery()
            naive.start_loop()
            phases.append(run_phase("naive phase", [naive], stack, plan, params, rng))
        report(params, stack, watcher, naive, phases, started, load_before)
        missed = len(watcher.undetected()) + len(naive.undetected())
        failed = False
        return 1 if missed else 0
    finally:
        if naive is not None and not naive.loop_stopped:
            naive.stop_loop()
        if failed:
            for child in (stack.simulator, stack.worker, stack.beat):
                if child is not None and child.tail():
                    log(f"last lines of {child.name}.log:\n{child.tail()}")
        stack.stop()
        if params.keep or failed:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
