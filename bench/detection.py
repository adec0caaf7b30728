"""Detection latency and Voltage request cost: the watcher against a naive 2-second poller.

The script starts everything it needs on loopback, in a temporary directory: its own
redis-server, the Voltage simulator as a separate process, and one `celery -A watcher worker`
plus one `celery -A watcher beat` running the production poll schedule (unless flags say
otherwise). It then creates N receives on each side:

* **watcher** (polling only): with `create_and_watch`, so the Celery stack polls them and writes
  one outbox event per final transition. Detection time = the Redis XADD time of that event
  (the milliseconds in its stream id).
* **watcher+hint** (`--hint`): a second, separate watcher deployment (its own Redis database,
  worker, beat and wallet id) plus `watcher api` with VOLTAGE_WEBHOOK_SECRET set. The bench
  plays Voltage: right after a settle/fail call answers, it POSTs the webhook Voltage would send
  (`{"type": "receive", "detail": {"event": ..., "data": <the payment>}}`, signed with
  `watcher.api.ingress.sign`, `x-voltage-signature`/`x-voltage-timestamp`) to the API's
  `/v1/voltage/webhooks`, which re-reads the payment at once. Detection time as for the
  watcher: the XADD time of its outbox event.
* **naive**: with a plain `VoltageClient` (`submit_receive` + `wait_for_invoice`, on its own
  wallet id so the watchers' list sweeps never page through them), watched by a loop that GETs
  every pending payment every 2 seconds. Detection time = when a GET first answers final.

Two plans:

* **latency** (default): payment i of each side settles (or fails) at the same offset, uniform
  over the settle window, through `POST /_sim/payments/{id}/settle|fail`; the rest stay pending.
  Latency = detection time - the wall-clock time the settle/fail call answered.
* **mix** (`--mix`): a realistic mix, each offset counted from the payment's own creation: paid
  within the first minute, paid later (before expiry), never paid (the invoice `expiration` is
  short, default 600 s, and the simulator expires them by itself), and a few failed. Every
  payment must reach its final status on every side (`expired` included). The point is the
  cost: Voltage requests per payment per class.

Voltage requests per payment come from the simulator's `GET /_sim/stats` (per-payment GET
counts by id, list calls shared out over the payments, creates). Nothing about timing is
asserted; the exit status is 1 only if a payment was missed, reached the wrong status, was
reported twice, or was reported without having changed.

Run (from the project root):

    .venv/bin/python -m bench.detection                # N=200, 120 s window, ~2.5 minutes
    .venv/bin/python -m bench.detection --quick        # N=30, ~25 s smoke run
    .venv/bin/python -m bench.detection --hint         # + watcher with Voltage webhooks, ~2.5 min
    .venv/bin/python -m bench.detection --mix          # realistic mix, expiration 600 s, ~10.5 min
    .venv/bin/python -m bench.detection --mix --quick  # N=40, expiration 90 s, ~2 min
    .venv/bin/python -m bench.detection --mode sequential --poll-schedule 60:2,600:5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bench.common import (
    Child,
    child_env,
    exit_on_sigterm,
    fmt,
    load_average,
    log,
    log_tails,
    machine_line,
    percentile,
    print_table,
    remove_or_keep,
    start_simulator,
    wait_for,
    write_json,
)
from watcher.api.ingress import HEADER_SIGNATURE, HEADER_TIMESTAMP, INGRESS_ROUTE, sign
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
HINT_WALLET = "wallet-bench-hint"
NAIVE_WALLET = "wallet-bench-naive"
HINT_SECRET = "bench-voltage-webhook-secret-0123456789"  # noqa: S105 - the bench's own
API_TOKEN = "bench-api-token-0123456789abcdef"  # noqa: S105 - the bench's own API
FINAL = frozenset({"completed", "failed", "expired"})
EXPECTED = {"settle": "completed", "fail": "failed"}
SIDE_LABELS = {"watcher": "watcher", "hint": "watcher+hint", "naive": "naive"}

# The realistic mix. Offsets count from each payment's creation.
PAID_EARLY = "paid_early"
PAID_LATE = "paid_late"
EXPIRED = "expired"
FAILED = "failed"
MIX_CLASSES = (PAID_EARLY, PAID_LATE, EXPIRED, FAILED)
CLASS_LABELS = {
    PAID_EARLY: "paid within 60 s",
    PAID_LATE: "paid after 60 s",
    EXPIRED: "never paid: expired",
    FAILED: "failed",
}
CLASS_EXPECTED = {
    PAID_EARLY: "completed",
    PAID_LATE: "completed",
    EXPIRED: "expired",
    FAILED: "failed",
}
DEFAULT_MIX_SHARES = (0.55, 0.15, 0.25, 0.05)
FIRST_MINUTE = 60.0
BEFORE_EXPIRY = 15.0  # late payments and failures happen at least this long before expiry
MIN_EXPIRATION = 80


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
    hint: bool = False
    mix: bool = False
    expiration: int | None = None
    mix_shares: tuple[float, float, float, float] = DEFAULT_MIX_SHARES
    json_path: Path | None = None


@dataclass(frozen=True)
class Plan:
    """Index-aligned for every side: payment i gets actions[i] at offsets[i] (or nothing) and
    must end as expected[i] (None: stays pending, no event allowed)."""

    offsets: list[float]
    actions: list[str | None]
    classes: list[str]
    expected: list[str | None]
    from_creation: bool  # offsets count from each payment's creation (mix), else from t0


def make_plan(params: Params, rng: random.Random) -> Plan:
    if params.mix:
        return make_mix_plan(params, rng)
    n = params.payments
    settle_n = round(n * params.settle_share)
    fail_n = min(round(n * params.fail_share), n - settle_n)
    chosen = rng.sample(range(n), settle_n + fail_n)
    actions: list[str | None] = [None] * n
    for position, index in enumerate(chosen):
        actions[index] = "settle" if position < settle_n else "fail"
    offsets = [rng.uniform(0.0, params.duration) for _ in range(n)]
    classes = [{"settle": "settled", "fail": "failed"}.get(a or "", "untouched") for a in actions]
    expected = [EXPECTED[a] if a else None for a in actions]
    return Plan(offsets, actions, classes, expected, from_creation=False)


def mix_counts(n: int, shares: Sequence[float]) -> list[int]:
    """Shares of n as whole payments that add up to n (largest remainders)."""
    raw = [n * s for s in shares]
    counts = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def make_mix_plan(params: Params, rng: random.Random) -> Plan:
    expiration = float(params.expiration or 0)
    classes = [
        name
        for name, count in zip(
            MIX_CLASSES, mix_counts(params.payments, params.mix_shares), strict=True
        )
        for _ in range(count)
    ]
    rng.shuffle(classes)
    offsets: list[float] = []
    actions: list[str | None] = []
    for name in classes:
        if name == PAID_EARLY:
            offsets.append(rng.uniform(1.0, FIRST_MINUTE - 5.0))
        elif name == PAID_LATE:
            offsets.append(rng.uniform(FIRST_MINUTE + 2.0, expiration - BEFORE_EXPIRY))
        elif name == FAILED:
            offsets.append(rng.uniform(1.0, expiration - BEFORE_EXPIRY))
        else:
            offsets.append(expiration)
        actions.append({PAID_EARLY: "settle", PAID_LATE: "settle", FAILED: "fail"}.get(name))
    expected: list[str | None] = [CLASS_EXPECTED[name] for name in classes]
    return Plan(offsets, actions, classes, expected, from_creation=True)


# --- the stack --------------------------------------------------------------------------------


class Deployment:
    """One watcher deployment: a Redis database, a Celery worker and beat, and (for the hint
    side) `watcher api` with the Voltage-webhook ingress on."""

    def __init__(self, name: str, db: int, wallet: str, *, api: bool) -> None:
        self.name = name
        self.db = db
        self.wallet = wallet
        self.with_api = api
        self.suffix = "" if name == "watcher" else f"-{name}"
        self.values: dict[str, str] = {}
        self.settings: Settings | None = None
        self.runtime: Runtime | None = None
        self.worker: Child | None = None
        self.beat: Child | None = None
        self.api: Child | None = None
        self.api_port = 0

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.api, self.worker, self.beat) if c is not None]

    def ticking(self) -> bool:
        """The worker is up: it has run the dispatcher ticks beat sends."""
        return self.rt.store.counters().get("dispatch_ticks", 0) >= 2


class Stack:
    """redis-server + simulator process + per deployment a Celery worker and beat (+ API), all
    ours, all on loopback."""

    def __init__(self, params: Params, tmp: Path) -> None:
        self.params = params
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis")
        self.sim_port = 0
        self.simulator: Child | None = None
        self.deployments = [Deployment("watcher", 0, WATCHER_WALLET, api=False)]
        if params.hint:
            self.deployments.append(Deployment("hint", 1, HINT_WALLET, api=True))
        self.http = requests.Session()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def watcher(self) -> Deployment:
        return self.deployments[0]

    @property
    def rt(self) -> Runtime:
        return self.watcher.rt

    @property
    def settings(self) -> Settings | None:
        return self.watcher.settings

    def deployment(self, name: str) -> Deployment:
        return next(d for d in self.deployments if d.name == name)

    def start(self) -> None:
        self.redis.start()
        self.sim_port = free_port()
        self.simulator = start_simulator(
            self.sim_port, API_KEY, generating_delay=0.05, cwd=self.tmp, http=self.http
        )
        for deployment in self.deployments:
            self._configure(deployment)
        assert self.watcher.settings is not None
        configure_logging(self.watcher.settings)

    def _configure(self, deployment: Deployment) -> None:
        data_dir = self.tmp / f"data{deployment.suffix}"
        data_dir.mkdir(exist_ok=True)
        redis_url = self.redis.url.rsplit("/", 1)[0] + f"/{deployment.db}"
        values = {
            "WATCHER_REDIS_URL": redis_url,
            "VOLTAGE_API_URL": self.base_url,
            "VOLTAGE_API_KEY": API_KEY,
            "VOLTAGE_ORGANIZATION_ID": ORG_ID,
            "VOLTAGE_ENVIRONMENT_ID": ENV_ID,
            "VOLTAGE_WALLET_ID": deployment.wallet,
            "WATCHER_DATA_DIR": str(data_dir),
            "WATCHER_LOG_FORMAT": "json",
            "WATCHER_LOG_LEVEL": "WARNING",
        }
        optional = {
            "WATCHER_POLL_SCHEDULE": self.params.poll_schedule,
            "WATCHER_SWEEP_INTERVAL": self.params.sweep_interval,
            "WATCHER_DISPATCH_INTERVAL": self.params.dispatch_interval,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        if deployment.with_api:
            values["VOLTAGE_WEBHOOK_SECRET"] = HINT_SECRET
            values["WATCHER_API_TOKENS"] = API_TOKEN
        deployment.values = values
        deployment.settings = load_settings(**{k.lower(): v for k, v in values.items()})
        deployment.runtime = Runtime.from_settings(deployment.settings)

    def start_celery(self) -> None:
        for deployment in self.deployments:
            self._start_processes(deployment)
        for deployment in self.deployments:
            wait_for(
                f"the {deployment.name} worker to run dispatcher ticks",
                deployment.ticking,
                timeout=60,
                children=deployment.children,
            )
            if deployment.api is not None:
                wait_for(
                    f"the {deployment.name} API",
                    partial(self.api_ready, deployment),
                    timeout=60,
                    children=deployment.children,
                )

    def api_ready(self, deployment: Deployment) -> bool:
        return self.http.get(f"{deployment.api_url}/readyz", timeout=1).ok

    def _start_processes(self, deployment: Deployment) -> None:
        env = child_env(deployment.values)
        celery = [sys.executable, "-m", "celery", "-A", "watcher"]
        suffix = deployment.suffix
        deployment.worker = Child(
            f"worker{suffix}",
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
                f"bench{suffix}@%h",
            ],
            env,
            self.tmp,
        ).start()
        deployment.beat = Child(
            f"beat{suffix}",
            [*celery, "beat", "-s", str(self.tmp / f"celerybeat-schedule{suffix}")],
            env,
            self.tmp,
        ).start()
        if deployment.with_api:
            deployment.api_port = free_port()
            deployment.api = Child(
                f"api{suffix}",
                [
                    sys.executable,
                    "-m",
                    "watcher",
                    "api",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(deployment.api_port),
                ],
                env,
                self.tmp,
            ).start()

    def celery_alive(self) -> bool:
        return all(
            c is not None and c.alive
            for d in self.deployments
            for c in (d.worker, d.beat, *((d.api,) if d.with_api else ()))
        )

    def children(self) -> list[Child | None]:
        return [self.simulator, *(c for d in self.deployments for c in d.children)]

    def stop_celery(self) -> None:
        for deployment in self.deployments:
            for child in (deployment.api, deployment.beat, deployment.worker):
                if child is not None:
                    child.stop()

    def stop(self) -> None:
        self.stop_celery()
        if self.simulator is not None:
            self.simulator.stop()
        for deployment in self.deployments:
            if deployment.runtime is not None:
                with contextlib.suppress(Exception):
                    deployment.runtime.redis.close()
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


# --- the sides --------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    n: int
    expiration: int | None = None
    ids: dict[int, str] = field(default_factory=dict)  # plan index -> payment id
    created_at: dict[str, float] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)  # payment id -> plan class
    expected: dict[str, str | None] = field(default_factory=dict)  # final status it must reach
    actions: dict[str, str] = field(default_factory=dict)  # payment id -> settle|fail
    acted_at: dict[str, float] = field(default_factory=dict)  # when the settle/fail answered
    act_failed: set[str] = field(default_factory=set)
    expires_at: dict[str, float] = field(default_factory=dict)  # the simulator's expiry instant
    detected: dict[str, float] = field(default_factory=dict)
    detected_status: dict[str, str] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    create_errors: int = 0
    create_requests: int = 0  # every request the creating client sent (POST + GETs)
    create_posts: int = 0
    phase: str = ""
    started: float = 0.0
    ended: float = 0.0

    @property
    def label(self) -> str:
        return SIDE_LABELS.get(self.name, self.name)

    def create(self, index: int) -> str:
        raise NotImplementedError

    def finish_creates(self) -> None:
        """Note how many requests the creates took (called once they are all done)."""

    def after_act(self, pid: str, action: str, payment: dict[str, Any]) -> None:
        """Called right after a settle/fail call answered (the hint side tells the watcher)."""

    def refresh(self) -> None:
        """Pick up detections (the naive loop records its own as it goes)."""

    @property
    def all_ids(self) -> set[str]:
        return set(self.ids.values())

    @property
    def acted(self) -> int:
        return len(self.acted_at)

    def checked(self) -> list[str]:
        """Payments whose outcome is checked: all but those whose settle/fail call failed."""
        return [pid for pid in self.expected if pid not in self.act_failed]

    def undetected(self) -> list[str]:
        return [
            pid
            for pid in self.checked()
            if self.expected[pid] is not None and pid not in self.detected
        ]

    def wrong(self) -> list[str]:
        return [
            pid
            for pid in self.checked()
            if pid in self.detected
            and self.expected[pid] is not None
            and self.detected_status.get(pid) != self.expected[pid]
        ]

    def unexpected(self) -> list[str]:
        """Reported final although nothing happened to them (latency plan: untouched)."""
        return [pid for pid in self.checked() if pid in self.detected and not self.expected[pid]]

    def duplicates(self) -> list[str]:
        return [pid for pid, count in self.events.items() if count > 1]

    def problems(self) -> int:
        return (
            len(self.undetected())
            + len(self.wrong())
            + len(self.unexpected())
            + len(self.duplicates())
        )


class WatcherSide(Side):
    def __init__(
        self, n: int, rt: Runtime, expiration: int | None = None, name: str = "watcher"
    ) -> None:
        super().__init__(name, n, expiration)
        self.rt = rt
        self._last_entry = "-"
        self._requests_before = rt.voltage.request_count

    def create(self, index: int) -> str:
        result = create_and_watch(
            self.rt,
            amount_msats=1_000 + index,
            description=f"bench {self.name} {index}",
            expiration=self.expiration,
            metadata={"bench": self.name, "i": str(index)},
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


class HintSide(WatcherSide):
    """A watcher that also hears from "Voltage": a signed webhook right after each settle/fail."""

    def __init__(self, n: int, rt: Runtime, api_url: str, expiration: int | None = None) -> None:
        super().__init__(n, rt, expiration, name="hint")
        self.url = api_url + "/v1" + INGRESS_ROUTE
        self.session = requests.Session()
        self.answers: Counter[str] = Counter()  # accepted | ignored: <reason> | HTTP n | error
        self.post_ms: list[float] = []

    def after_act(self, pid: str, action: str, payment: dict[str, Any]) -> None:
        event = EXPECTED[action]
        body = json.dumps(
            {"type": "receive", "detail": {"event": event, "data": payment}},
            separators=(",", ":"),
        ).encode()
        stamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            HEADER_SIGNATURE: sign(HINT_SECRET, body, stamp),
            HEADER_TIMESTAMP: stamp,
            "x-voltage-event": f"receive.{event}",
            "x-voltage-webhook-id": str(uuid.uuid4()),
        }
        began = time.perf_counter()
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=(3.05, 10))
        except requests.RequestException as exc:
            self.answers[f"error: {type(exc).__name__}"] += 1
            return
        self.post_ms.append((time.perf_counter() - began) * 1000)
        answer: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            answer = response.json()
        if response.status_code != 202:
            self.answers[f"HTTP {response.status_code}"] += 1
        elif answer.get("status") == "accepted":
            self.answers["accepted"] += 1
        else:
            self.answers[f"ignored: {answer.get('reason')}"] += 1

    def close(self) -> None:
        self.session.close()


class NaiveSide(Side):
    """Creates with a plain VoltageClient; a loop GETs every pending payment each interval."""

    def __init__(
        self, n: int, base_url: str, interval: float, threads: int, expiration: int | None = None
    ) -> None:
        super().__init__("naive", n, expiration)
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
            expiration=self.expiration,
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
    due_during_creates: int = 0  # settles/fails due before the creates were all done


def create_all(
    label: str, sides: list[Side], stack: Stack, params: Params, info: PhaseInfo
) -> None:
    """Create payment i on every side, interleaved, from a small thread pool."""
    now = time.time()
    for side in sides:
        side.started = now
        side.phase = label
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
    # The naive client counts its own POSTs; the rest of this window's POSTs are the watchers',
    # shared by how many creates each attempted (retries are rare: no faults are injected).
    rest = posts - sum(s.create_posts for s in sides if isinstance(s, NaiveSide))
    watchers = [s for s in sides if isinstance(s, WatcherSide)]
    attempts = [len(s.ids) + s.create_errors for s in watchers]
    for side, tried in zip(watchers, attempts, strict=True):
        side.create_posts = rest * tried // max(1, sum(attempts))
    if watchers:
        watchers[0].create_posts += rest - sum(s.create_posts for s in watchers)


def settle_to_plan(
    sides: list[Side], stack: Stack, plan: Plan, rng: random.Random, info: PhaseInfo
) -> None:
    """Settle/fail payment i of every side at its planned instant (pairs in random order),
    noting when each call answered: t0 + offsets[i], or creation + offsets[i] for the mix."""
    t0 = time.time()
    events: list[tuple[float, float, Side, str, str]] = []
    for i, action in enumerate(plan.actions):
        for side in sides:
            pid = side.ids.get(i)
            if pid is None:
                continue
            side.classes[pid] = plan.classes[i]
            side.expected[pid] = plan.expected[i]
            if action is None:
                continue
            side.actions[pid] = action
            base = side.created_at[pid] if plan.from_creation else t0
            events.append((base + plan.offsets[i], rng.random(), side, pid, action))
    events.sort(key=lambda e: (e[0], e[1]))
    next_report = time.monotonic() + 60
    for done, (due, _, side, pid, action) in enumerate(events):
        while (wait := due - time.time()) > 0:  # sleeping until a fixed instant
            time.sleep(min(wait, 0.05))
            if time.monotonic() > next_report:
                next_report += 60
                log(f"{info.label}: {done}/{len(events)} settles/fails done")
        if due >= t0:
            info.settle_lateness_max = max(info.settle_lateness_max, time.time() - due)
        else:  # mix: due from creation while other creates were still running
            info.due_during_creates += 1
        try:
            payment = stack.control("POST", f"/payments/{pid}/{action}")
        except requests.RequestException as exc:
            side.act_failed.add(pid)
            log(f"{side.name}: {action} {pid} failed: {exc}")
            continue
        side.acted_at[pid] = time.time()
        side.after_act(pid, action, payment)


def drain(sides: list[Side], stack: Stack, timeout: float) -> None:
    """Until every payment that must end is detected on every side, or the deadline."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 30
    while time.monotonic() < deadline:
        for side in sides:
            side.refresh()
        outstanding = sum(len(side.undetected()) for side in sides)
        if not outstanding:
            return
        if not stack.celery_alive() and any(isinstance(s, WatcherSide) for s in sides):
            log("a Celery or API process died; stopping the drain early")
            return
        if time.monotonic() > next_report:
            next_report += 30
            left = deadline - time.monotonic()
            log(f"waiting for {outstanding} detections ({left:.0f}s left)")
        time.sleep(0.1)


def note_expiry(sides: list[Side], stack: Stack) -> None:
    """The simulator's expiry instant of every payment (expiry latency is measured from it)."""
    items = stack.control("GET", "/payments").get("items", [])
    instants = {}
    for item in items:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            instants[item["id"]] = datetime.fromisoformat(item["sim"]["expires_at"]).timestamp()
    for side in sides:
        for pid in side.all_ids:
            if pid in instants:
                side.expires_at[pid] = instants[pid]


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
    if plan.from_creation:
        log(
            f"{label}: created in {info.create_seconds:.1f}s; settling/failing to plan, "
            f"the rest expire after {params.expiration}s"
        )
    else:
        log(f"{label}: created in {info.create_seconds:.1f}s; settling over {params.duration:.0f}s")
    settle_to_plan(sides, stack, plan, rng, info)
    timeout = params.drain_timeout
    if plan.from_creation and any(side.created_at for side in sides):
        last_expiry = max(max(side.created_at.values(), default=0.0) for side in sides) + (
            params.expiration or 0
        )
        timeout += max(0.0, last_expiry - time.time())
    log(f"{label}: last settle done; waiting up to {timeout:.0f}s for detections")
    drain(sides, stack, timeout)
    end = time.time()
    for side in sides:
        side.refresh()
        side.ended = end
        if isinstance(side, NaiveSide):
            side.stop_loop()
    info.stats = stack.stats()
    if plan.from_creation:
        note_expiry(sides, stack)
    log(f"{label}: done")
    return info


# --- numbers ----------------------------------------------------------------------------------


def latencies_ms(side: Side, only: Iterable[str] | None = None) -> list[float]:
    """Settle/fail answer -> detection; for payments left to expire: expiry -> detection."""
    ids = side.acted_at.keys() if only is None else only
    values = []
    for pid in ids:
        if pid not in side.detected:
            continue
        if pid in side.acted_at:
            values.append((side.detected[pid] - side.acted_at[pid]) * 1000.0)
        elif pid in side.expires_at and only is not None:
            values.append((side.detected[pid] - side.expires_at[pid]) * 1000.0)
    return values


@dataclass
class Cost:
    total: int
    creates: int
    watching: int
    per_payment_gets: int
    list_calls: float
    pending_minutes: float


def cost_of(side: Side, stats: dict[str, Any], list_calls: float) -> Cost:
    per_payment: dict[str, int] = stats.get("per_payment", {})
    gets = sum(per_payment.get(pid, 0) for pid in side.all_ids)
    create_gets = side.create_requests - side.create_posts
    watching = gets - create_gets + list_calls
    minutes = 0.0
    for pid, created in side.created_at.items():
        minutes += max(0.0, side.detected.get(pid, side.ended) - created) / 60.0
    return Cost(
        total=round(gets + list_calls + side.create_posts),
        creates=side.create_requests,
        watching=round(watching),
        per_payment_gets=gets,
        list_calls=list_calls,
        pending_minutes=minutes,
    )


def list_shares(sides: Sequence[Side], phases: dict[str, PhaseInfo]) -> dict[str, float]:
    """List calls (GET /payments) per side: only watchers list. With two watcher deployments
    the simulator cannot tell whose a list call was, so the calls of a phase are shared by the
    number of sweeps each deployment counted."""
    shares: dict[str, float] = {}
    by_phase: dict[str, list[WatcherSide]] = {}
    for side in sides:
        shares[side.name] = 0.0
        if isinstance(side, WatcherSide):
            by_phase.setdefault(side.phase, []).append(side)
    for phase, watchers in by_phase.items():
        calls = int(phases[phase].stats.get("by_route", {}).get("GET /payments", 0))
        sweeps = [max(0, side.rt.store.counters().get("sweeps", 0)) for side in watchers]
        for side, count in zip(watchers, sweeps, strict=True):
            shares[side.name] = calls * (count / sum(sweeps) if sum(sweeps) else 1 / len(sweeps))
    return shares


def side_rows(side: Side, cost: Cost, stats_label: str, mix: bool) -> list[tuple[str, str]]:
    lat = latencies_ms(side)
    settled = sum(1 for pid, a in side.actions.items() if a == "settle" and pid in side.acted_at)
    failed = sum(1 for pid, a in side.actions.items() if a == "fail" and pid in side.acted_at)
    expiring = sum(1 for pid in side.checked() if side.expected[pid] == "expired")
    n = max(1, len(side.ids))
    polls = cost.watching - cost.list_calls
    rows = [
        (
            "payments created",
            f"{len(side.ids)}" + (f" ({side.create_errors} failed)" * bool(side.create_errors)),
        ),
        ("settled (completed)", str(settled)),
        ("failed on purpose", str(failed)),
    ]
    if mix:
        rows.append(("left to expire", str(expiring)))
    rows += [
        (
            "detected",
            str(sum(1 for p in side.checked() if side.expected[p] and p in side.detected)),
        ),
        ("missed", str(len(side.undetected()))),
        ("wrong final status", str(len(side.wrong()))),
        ("events for untouched payments", str(len(side.unexpected()))),
        ("payments with duplicate events", str(len(side.duplicates()))),
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
        ("  of which list calls (GET /payments)", fmt(cost.list_calls)),
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
    return rows


def scheduled_polls(steps: Sequence[tuple[float, float]], seconds: float) -> float:
    """How many polls the schedule asks for in a payment's first `seconds` (no jitter, no
    check at expiry): what the polls made are compared with, to see if the worker kept up."""
    total = start = 0.0
    for until, every in steps:
        end = min(seconds, until)
        if end > start:
            total += (end - start) / every
        start = until
        if start >= seconds:
            return total
    return total + max(0.0, seconds - start) / steps[-1][1]


def age_split(side: Side, threshold: float) -> tuple[list[float], list[float]]:
    young = [pid for pid in side.acted_at if side.acted_at[pid] - side.created_at[pid] < threshold]
    old = [pid for pid in side.acted_at if side.acted_at[pid] - side.created_at[pid] >= threshold]
    return latencies_ms(side, young), latencies_ms(side, old)


# --- the realistic mix ------------------------------------------------------------------------


@dataclass
class ClassCost:
    count: int
    requests: float  # per payment: its GETs + a share of creates and list calls
    gets: float  # per payment: GETs of the payment itself (create-time invoice reads included)


def class_costs(side: Side, stats: dict[str, Any], list_calls: float) -> dict[str, ClassCost]:
    """Voltage requests per payment for each class of the mix, and for all ("all")."""
    per_payment: dict[str, int] = stats.get("per_payment", {})
    created = max(1, len(side.ids))
    overhead = (side.create_posts + list_calls) / created  # the same for every payment
    groups: dict[str, list[str]] = {name: [] for name in MIX_CLASSES}
    for pid in side.all_ids:
        groups.setdefault(side.classes.get(pid, "?"), []).append(pid)
    groups["all"] = list(side.all_ids)
    costs = {}
    for name, pids in groups.items():
        gets = [per_payment.get(pid, 0) for pid in pids]
        mean = sum(gets) / len(gets) if gets else 0.0
        costs[name] = ClassCost(len(pids), mean + overhead if pids else 0.0, mean)
    return costs


def mix_report(
    params: Params,
    sides: list[Side],
    costs: dict[str, dict[str, ClassCost]],
    list_calls: dict[str, float],
) -> None:
    naive = next((s for s in sides if s.name == "naive"), None)
    others = [s for s in sides if s is not naive]
    rows = []
    for name in (*MIX_CLASSES, "all"):
        row = [CLASS_LABELS.get(name, name), str(costs[sides[0].name][name].count)]
        row += [fmt(costs[s.name][name].requests, 1) for s in sides]
        if naive is not None:
            theirs = costs[naive.name][name].requests
            for side in others:
                mine = costs[side.name][name].requests
                row.append(f"{mine / theirs:.2f}" if theirs else "-")
        rows.append(row)
    print_table(
        f"Realistic mix: Voltage requests per payment by class (expiration {params.expiration}s; "
        "each payment's own GETs, plus creates and list calls shared out evenly)",
        [
            "class",
            "payments",
            *(f"{s.label} req/payment" for s in sides),
            *(f"{s.label}/naive" for s in others if naive),
        ],
        rows,
    )
    for side in sides:
        c = costs[side.name]["all"]
        created = max(1, len(side.ids))
        print(
            f"  {side.label}: {c.gets:.1f} GETs of the payment itself (create-time invoice reads "
            f"included) + {side.create_posts / created:.2f} create POSTs + "
            f"{list_calls[side.name] / created:.2f} list calls per payment "
            f"({list_calls[side.name]:.0f} list calls in all)"
        )
    print()
    rows = []
    for name in MIX_CLASSES:
        row = [CLASS_LABELS[name]]
        for side in sides:
            pids = [pid for pid in side.checked() if side.classes.get(pid) == name]
            lat = latencies_ms(side, pids)
            row.append(
                f"{fmt(percentile(lat, 50))} / {fmt(percentile(lat, 95))} / "
                f"{fmt(max(lat) if lat else None)}"
            )
        rows.append(row)
    print_table(
        "Realistic mix: detection latency by class, p50 / p95 / max ms (from the settle/fail "
        "answer; for expired ones from the simulator's expiry instant)",
        ["class", *(s.label for s in sides)],
        rows,
    )
    rows = []
    for name in MIX_CLASSES:
        row = [f"{CLASS_LABELS[name]} -> {CLASS_EXPECTED[name]}"]
        for side in sides:
            pids = [pid for pid in side.checked() if side.classes.get(pid) == name]
            right = sum(1 for p in pids if side.detected_status.get(p) == CLASS_EXPECTED[name])
            row.append(f"{right}/{len(pids)}")
        rows.append(row)
    print_table(
        "Realistic mix: payments that reached the right final status",
        ["class -> status", *(s.label for s in sides)],
        rows,
    )


# --- the report -------------------------------------------------------------------------------


def and_list(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def print_header(params: Params, stack: Stack, sides: list[Side], load_before: str) -> None:
    """What ran, on what, with which settings."""
    settings = stack.settings
    assert settings is not None
    print()
    print("=== voltage-watcher detection benchmark ===")
    redis_version = stack.rt.redis.info("server").get("redis_version", "?")
    print(machine_line(redis_version, load_before))
    mode = (
        f"concurrent: {and_list([s.label for s in sides])} created, settled and watched in the "
        "same time window"
        if params.mode == "concurrent"
        else "sequential: watcher phase, then Celery stopped, then naive phase (same simulator)"
    )
    print(f"mode: {mode}")
    if params.mix:
        counts = mix_counts(params.payments, params.mix_shares)
        shares = ", ".join(
            f"{CLASS_LABELS[name]} {share:.0%} ({count})"
            for name, share, count in zip(MIX_CLASSES, params.mix_shares, counts, strict=True)
        )
        print(
            f"parameters: realistic mix, payments={params.payments} per side, invoice "
            f"expiration={params.expiration}s (the simulator expires them by itself), "
            f"shares: {shares}; offsets from each payment's creation: paid within 60 s uniform "
            f"1-{FIRST_MINUTE - 5:g}s, paid later {FIRST_MINUTE + 2:g}-"
            f"{(params.expiration or 0) - BEFORE_EXPIRY:g}s, failed 1-"
            f"{(params.expiration or 0) - BEFORE_EXPIRY:g}s; drain timeout="
            f"{params.drain_timeout:.0f}s after the last expiry, seed={params.seed}"
        )
    else:
        print(
            f"parameters: payments={params.payments} per side, "
            f"settle_share={params.settle_share}, fail_share={params.fail_share}, settle "
            f"window={params.duration:.0f}s (uniform, same offsets for every side), drain "
            f"timeout={params.drain_timeout:.0f}s, seed={params.seed}"
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
        f"expiry grace {settings.watcher_expiry_grace:g}s, "
        f"poll chunk {settings.watcher_poll_chunk}, worker --pool threads --concurrency "
        f"{params.worker_concurrency}"
    )
    if params.hint:
        print(
            f"watcher+hint: the same settings in a second deployment (Redis db 1, its own "
            f"worker and beat, wallet {HINT_WALLET}) plus `watcher api` with "
            "VOLTAGE_WEBHOOK_SECRET; right after each settle/fail answers, the bench POSTs "
            "Voltage's signed webhook {type: receive, detail: {event, data: payment}} to "
            f"/v1{INGRESS_ROUTE}"
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


def print_diagnostics(sides: list[Side], costs: dict[str, Cost], phases: list[PhaseInfo]) -> None:
    """Counters, request sources and every missed or wrong payment by id."""
    print("Diagnostics")
    for side in sides:
        if not isinstance(side, WatcherSide):
            continue
        counters = side.rt.store.counters()
        poll_counts = []
        for pid in side.all_ids:
            record = side.rt.store.get(pid)
            if record is not None:
                poll_counts.append(record.poll_count)
        create_gets = side.create_requests - side.create_posts
        cost = costs[side.name]
        print(
            f"  {side.label} counters: "
            + ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))
        )
        print(
            f"  {side.label}: GETs of its ids={cost.per_payment_gets} (create-time "
            f"{create_gets}, polls {cost.per_payment_gets - create_gets}); sum of records' "
            f"poll_count={sum(poll_counts)}; list calls={cost.list_calls:.0f}; creates: "
            f"{side.create_posts} POSTs, {side.create_requests} requests"
        )
        steps = side.rt.settings.watcher_poll_schedule
        asked = sum(
            scheduled_polls(steps, side.detected.get(pid, side.ended) - created)
            for pid, created in side.created_at.items()
        )
        print(
            f"  {side.label}: polls made {sum(poll_counts)} vs {asked:.0f} that the poll "
            f"schedule asks for while the payments were pending "
            f"({100 * sum(poll_counts) / asked if asked else 0:.0f}% of it; well below 100% "
            "means the worker fell behind its schedule)"
        )
        if isinstance(side, HintSide):
            answers = ", ".join(f"{k}={v}" for k, v in sorted(side.answers.items()))
            print(
                f"  {side.label}: webhooks posted={sum(side.answers.values())} ({answers}); "
                f"POST round trip p50 {fmt(percentile(side.post_ms, 50), 1)} ms, max "
                f"{fmt(max(side.post_ms) if side.post_ms else None, 1)} ms"
            )
    for side in sides:
        if isinstance(side, NaiveSide):
            print(
                f"  naive: loop GETs={side.gets} (errors {side.get_errors}), "
                f"rounds={side.rounds}, overruns={side.overruns}, longest "
                f"round={side.longest_round:.2f}s; per_payment GETs of its "
                f"ids={costs[side.name].per_payment_gets}; creates: {side.create_posts} POSTs, "
                f"{side.create_requests} requests"
            )
    for phase in phases:
        print(
            f"  {phase.label}: creates took {phase.create_seconds:.1f}s "
            f"({phase.posts_during_creates} POSTs), latest settle call "
            f"{phase.settle_lateness_max * 1000:.0f} ms behind plan"
            + (
                f" ({phase.due_during_creates} more were due while creates were still running, "
                "and were made right after)"
                if phase.due_during_creates
                else ""
            )
        )
    final = phases[-1].stats
    print(f"  simulator by_route: {json.dumps(final.get('by_route', {}), sort_keys=True)}")
    print(f"  simulator by_status: {json.dumps(final.get('by_status', {}), sort_keys=True)}")
    worst = sorted(
        ((side.detected[p] - side.acted_at[p]) * 1000, side.label, p)
        for side in sides
        for p in side.acted_at
        if p in side.detected
    )[-5:]
    print("  slowest detections: " + "; ".join(f"{s} {p[:8]} {ms:,.0f} ms" for ms, s, p in worst))
    for side in sides:
        if side.act_failed:
            print(f"  {side.label}: {len(side.act_failed)} settle/fail calls failed (not checked)")
        for pid in side.undetected():
            print(f"  MISSED: {side.label} {pid} ({side.classes.get(pid)})")
        for pid in side.wrong():
            print(
                f"  WRONG: {side.label} {pid} ({side.classes.get(pid)}) ended "
                f"{side.detected_status.get(pid)}, expected {side.expected.get(pid)}"
            )
        for pid in side.unexpected():
            print(f"  UNEXPECTED: {side.label} {pid} reported {side.detected_status.get(pid)}")
        for pid in side.duplicates():
            print(f"  DUPLICATE: {side.label} {pid} reported {side.events[pid]} times")


def report(
    params: Params,
    stack: Stack,
    sides: list[Side],
    phases: list[PhaseInfo],
    started: float,
    load_before: str,
) -> dict[str, Any]:
    """Print everything; return the headline numbers for `--json`."""
    settings = stack.settings
    assert settings is not None
    by_phase = {phase.label: phase for phase in phases}
    list_calls = list_shares(sides, by_phase)
    costs = {
        side.name: cost_of(side, by_phase[side.phase].stats, list_calls[side.name])
        for side in sides
    }

    print_header(params, stack, sides, load_before)
    columns = [side_rows(side, costs[side.name], side.phase, params.mix) for side in sides]
    print_table(
        "Results",
        ["", *(side.label for side in sides)],
        [[label, *(column[i][1] for column in columns)] for i, (label, _) in enumerate(columns[0])],
    )

    threshold = settings.watcher_poll_schedule[0][0]
    rows = []
    for side in sides:
        young, old = age_split(side, threshold)
        for name, lat in ((f"age < {threshold:g}s", young), (f"age >= {threshold:g}s", old)):
            rows.append(
                [
                    f"{side.label}, {name} at settle",
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

    mix_costs: dict[str, dict[str, ClassCost]] = {}
    if params.mix:
        mix_costs = {
            side.name: class_costs(side, by_phase[side.phase].stats, list_calls[side.name])
            for side in sides
        }
        mix_report(params, sides, mix_costs, list_calls)

    print_diagnostics(sides, costs, phases)
    print(f"  total wall time: {time.time() - started:.1f}s")
    return headline(params, sides, costs, mix_costs, list_calls)


def headline(
    params: Params,
    sides: list[Side],
    costs: dict[str, Cost],
    mix_costs: dict[str, dict[str, ClassCost]],
    list_calls: dict[str, float],
) -> dict[str, Any]:
    """The flat JSON object `--json` writes (read by `bench/run_all`)."""
    values: dict[str, Any] = {
        "bench": "detection",
        "mode": "mix" if params.mix else "latency",
        "payments": params.payments,
        "seed": params.seed,
        "sides": ",".join(side.name for side in sides),
        "problems": sum(side.problems() for side in sides),
    }
    if params.mix:
        counts = mix_counts(params.payments, params.mix_shares)
        values["mix_expiration_s"] = params.expiration
        for name, share, count in zip(MIX_CLASSES, params.mix_shares, counts, strict=True):
            values[f"mix_share_{name}"] = share
            values[f"mix_count_{name}"] = count
    else:
        values["settle_window_s"] = params.duration
    for side in sides:
        lat = latencies_ms(side)
        prefix = side.name
        n = max(1, len(side.ids))
        values[f"{prefix}_detected"] = sum(
            1 for pid in side.checked() if side.expected[pid] and pid in side.detected
        )
        values[f"{prefix}_problems"] = side.problems()
        for p in (50, 95, 99):
            values[f"{prefix}_latency_ms_p{p}"] = percentile(lat, p)
        values[f"{prefix}_latency_ms_max"] = max(lat) if lat else None
        values[f"{prefix}_requests_per_payment"] = costs[side.name].total / n
        values[f"{prefix}_list_calls_per_payment"] = list_calls[side.name] / n
        for name, cost in mix_costs.get(side.name, {}).items():
            values[f"{prefix}_requests_per_payment_{name}"] = cost.requests
        if params.mix:
            for name in MIX_CLASSES:
                pids = [pid for pid in side.checked() if side.classes.get(pid) == name]
                values[f"{prefix}_latency_ms_p50_{name}"] = percentile(latencies_ms(side, pids), 50)
    return values


# --- main -------------------------------------------------------------------------------------


def parse_shares(text: str) -> tuple[float, float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 4 or any(not 0 <= x <= 1 for x in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            "four shares within 0..1 that add up to 1: paid early, paid late, expired, failed"
        )
    return parts[0], parts[1], parts[2], parts[3]


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
        help="after the window (--mix: after the last expiry), wait at most this long for "
        "detections (default 30)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=30 and an 18 s window (~25 s in all); with --mix: N=40 and "
        "expiration 90 s (~2 min)",
    )
    parser.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent")
    parser.add_argument(
        "--hint",
        action="store_true",
        help="add a third side: a second watcher deployment told by signed Voltage webhooks "
        "right after each settle/fail (its own Redis db, worker, beat, `watcher api`)",
    )
    parser.add_argument(
        "--mix",
        action="store_true",
        help="realistic mix instead of the settle window: paid within a minute, paid later, "
        "never paid (expire), failed; reports Voltage requests per payment per class",
    )
    parser.add_argument(
        "--expiration",
        type=int,
        default=None,
        help=f"--mix: invoice expiration in seconds (default 600, --quick 90, at least "
        f"{MIN_EXPIRATION})",
    )
    parser.add_argument(
        "--mix-shares",
        type=parse_shares,
        default=DEFAULT_MIX_SHARES,
        metavar="EARLY,LATE,EXPIRED,FAILED",
        help="--mix: shares of payments paid within 60 s, paid later, never paid, failed "
        f"(default {','.join(f'{x:g}' for x in DEFAULT_MIX_SHARES)})",
    )
    parser.add_argument("--naive-interval", type=float, default=2.0)
    parser.add_argument("--naive-threads", type=int, default=8)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--poll-schedule", default=None, help="WATCHER_POLL_SCHEDULE")
    parser.add_argument("--sweep-interval", default=None, help="WATCHER_SWEEP_INTERVAL")
    parser.add_argument("--dispatch-interval", default=None, help="WATCHER_DISPATCH_INTERVAL")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the headline numbers"
    )
    args = parser.parse_args(argv)
    if args.mix:
        payments = args.payments or (40 if args.quick else 200)
        expiration = args.expiration or (90 if args.quick else 600)
        drain = args.drain_timeout or (20.0 if args.quick else 30.0)
        if not MIN_EXPIRATION <= expiration <= 86400:
            parser.error(f"--expiration must be {MIN_EXPIRATION}..86400 seconds")
    else:
        payments = args.payments or (30 if args.quick else 200)
        expiration = args.expiration
        drain = args.drain_timeout or (15.0 if args.quick else 30.0)
        if expiration is not None and not 1 <= expiration <= 86400:
            parser.error("--expiration must be 1..86400 seconds")
    duration = args.duration or (18.0 if args.quick else 120.0)
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
        hint=args.hint,
        mix=args.mix,
        expiration=expiration,
        mix_shares=args.mix_shares,
        json_path=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    exit_on_sigterm()
    load_before = load_average()
    rng = random.Random(params.seed)
    plan = make_plan(params, rng)
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-"))
    stack = Stack(params, tmp)
    sides: list[Side] = []
    started = time.time()
    failed = True
    try:
        log(
            f"temp dir {tmp}; starting redis, simulator, celery worker and beat"
            + (" (x2) and the API" if params.hint else "")
        )
        stack.start()
        stack.start_celery()
        watchers: list[Side] = [WatcherSide(params.payments, stack.rt, params.expiration)]
        if params.hint:
            hint = stack.deployment("hint")
            watchers.append(HintSide(params.payments, hint.rt, hint.api_url, params.expiration))
        naive = NaiveSide(
            params.payments,
            stack.base_url,
            params.naive_interval,
            params.naive_threads,
            params.expiration,
        )
        sides = [*watchers, naive]
        phases: list[PhaseInfo] = []
        if params.mode == "concurrent":
            naive.start_loop()
            phases.append(run_phase("run", sides, stack, plan, params, rng))
        else:
            phases.append(run_phase("watcher phase", watchers, stack, plan, params, rng))
            stack.stop_celery()
            naive.start_loop()
            phases.append(run_phase("naive phase", [naive], stack, plan, params, rng))
        values = report(params, stack, sides, phases, started, load_before)
        if params.json_path is not None:
            write_json(params.json_path, values)
        failed = False
        return 1 if values["problems"] else 0
    finally:
        for side in sides:
            if isinstance(side, NaiveSide) and not side.loop_stopped:
                side.stop_loop()
            if isinstance(side, HintSide):
                side.close()
        if failed:
            log_tails(stack.children())
        stack.stop()
        remove_or_keep(tmp, keep=params.keep, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
