"""One fault-suite run: the load, the faults, the wait for everything to arrive, the verdict.

The load plays an application (creates through `create_and_watch`, retrying with the same
client id when Redis or Voltage is down, as the README tells applications to) and plays the
payer (settles and fails through the simulator's control surface). Meanwhile the fault thread
SIGKILLs workers and beat, restarts Redis, takes Voltage away, turns on error/429/slow/malformed
answers, makes subscribers fail and hang, and opens the list-fault windows (list calls failing,
`updated_at` back-dated, lists lagging: list_faults.py); and the load hides a few payments from
statuses-filtered lists right after creating them, so only reconciliation or a read finds them.
When the faults stop, everything is brought back (list config at 0) and the run waits, with a
deadline, until every final payment has reached every subscriber that wants it; then the report
says what arrived, what came twice and what was lost.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import requests

from tests.chaos.cluster import Cluster
from tests.chaos.failover import run_failover_phase
from tests.chaos.hanging import run_hanging_phase
from tests.chaos.list_faults import KINDS as WINDOW_KINDS
from tests.chaos.list_faults import ListFaults
from tests.chaos.plan import SUBSCRIBERS, ChaosParams, PlannedPayment, make_plan
from tests.chaos.report import ChaosReport, OutboxEvent, build_report
from tests.chaos.subscribers import ChaosSubscriber
from watcher.engine.watching import create_and_watch, payment_id_for_client_id

T = TypeVar("T")

# Voltage misbehaving at random while the faults go on (the simulator's fault rules).
VOLTAGE_FAULTS: list[dict[str, Any]] = [
    {"kind": "status", "status": 503, "rate": 0.05},
    {"kind": "status", "status": 500, "rate": 0.03},
    {"kind": "rate_limit", "rate": 0.05, "retry_after": 1},
    {"kind": "malformed", "rate": 0.03},
    {"kind": "latency", "latency": 3.0, "rate": 0.03},  # past the 2 s read timeout
]


class Load:
    """Creates, settles and fails the planned payments at their times, whatever is down."""

    def __init__(self, cluster: Cluster, t0: float) -> None:
        self.cluster = cluster
        self.t0 = t0
        self.errors: list[str] = []
        self.retries: Counter[str] = Counter()
        self.hidden = 0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._outstanding = 0
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chaos-load")
        self.control = requests.Session()

    def schedule(self, at: float, job: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (at, next(self._seq), job))
            self._outstanding += 1
            self._cv.notify()

    def run(self, deadline: float) -> None:
        """Hand each job to the pool at its time; return when all are done (or at deadline)."""
        with self._cv:
            while (self._heap or self._outstanding) and time.time() < deadline:
                if self._heap and self._heap[0][0] <= time.time():
                    _, _, job = heapq.heappop(self._heap)
                    self._pool.submit(self._run_job, job)
                    continue
                wait = self._heap[0][0] - time.time() if self._heap else 0.5
                self._cv.wait(min(max(wait, 0.001), 0.5))
            if self._heap or self._outstanding:
                self.errors.append(f"load not finished by its deadline ({self._outstanding} left)")
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_job(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:
            self.errors.append(f"load job failed: {exc!r}")
        finally:
            with self._cv:
                self._outstanding -= 1
                self._cv.notify()

    def persist(self, what: str, call: Callable[[], T], deadline: float) -> T:
        """Call until it works: an application retries while Redis or Voltage is down."""
        while True:
            try:
                return call()
            except Exception:
                if time.time() > deadline:
                    raise
                self.retries[what] += 1
                time.sleep(0.3)

    def plan_payment(self, planned: PlannedPayment) -> None:
        self.schedule(self.t0 + planned.create_at, lambda: self._create(planned))

    def _create(self, planned: PlannedPayment) -> None:
        rt = self.cluster.rt
        self.persist(
            "create",
            lambda: create_and_watch(
                rt,
                amount_msats=planned.amount_msats,
                expiration=planned.expiration,
                metadata={"shop": planned.shop, "chaos": str(planned.index)},
                client_id=planned.client_id,
            ),
            deadline=time.time() + 120,
        )
        if planned.hidden:  # before its settle/fail is even scheduled, so before it is final
            self._hide(planned)
        if planned.act_at is not None:
            at = max(self.t0 + planned.act_at, time.time())
            self.schedule(at, lambda: self._act(planned))

    def _hide(self, planned: PlannedPayment) -> None:
        path = f"/payments/{self._payment_id(planned)}/hide-from-filtered-lists"

        def call() -> None:
            response = self.control.post(self.cluster.simulator.control_url + path, timeout=10)
            response.raise_for_status()

        self.persist("hide", call, deadline=time.time() + 120)
        self.hidden += 1

    def _payment_id(self, planned: PlannedPayment) -> str:
        wallet = self.cluster.rt.settings.voltage_wallet_id or ""
        return payment_id_for_client_id(wallet, planned.client_id)

    def _act(self, planned: PlannedPayment) -> None:
        payment_id = self._payment_id(planned)
        path = f"/payments/{payment_id}/{planned.action}"

        def call() -> None:
            response = self.control.post(self.cluster.simulator.control_url + path, timeout=10)
            if response.status_code == 409:
                self.errors.append(f"{planned.action} {payment_id}: already final")
                return
            response.raise_for_status()

        self.persist(planned.action, call, deadline=time.time() + 120)


class Faults:
    """The fault thread: one action at a time, at random, until told to stop."""

    def __init__(
        self,
        cluster: Cluster,
        subscribers: list[ChaosSubscriber],
        params: ChaosParams,
    ) -> None:
        self.cluster = cluster
        self.subscribers = subscribers
        self.params = params
        self.rng = random.Random(params.seed + 1)
        self.done: Counter[str] = Counter()
        self.timeline: list[tuple[float, float, str]] = []  # (from, to, what)
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)
        self._hard_redis = True
        self.lists = ListFaults(cluster.simulator.control_url, params, self.rng)

    def start(self) -> None:
        control = self.cluster.simulator.control_url
        for rule in VOLTAGE_FAULTS:
            requests.post(f"{control}/faults", json=rule, timeout=10).raise_for_status()
        for sub in self.subscribers:
            sub.misbehaving = True
        self.lists.start()
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(120)
        control = self.cluster.simulator.control_url
        if not self.cluster.simulator.running:
            self.cluster.simulator.start()
        self.lists.close_all()
        self.done.update(self.lists.done)
        self.timeline = sorted(self.timeline + self.lists.timeline)
        self.errors += self.lists.errors
        for rule in requests.get(f"{control}/faults", timeout=10).json()["faults"]:
            self.done[f"voltage {rule['kind']} answers"] += rule["applied"]
        requests.delete(f"{control}/faults", timeout=10).raise_for_status()
        for sub in self.subscribers:
            sub.misbehaving = False
        self._note_crashes(self.cluster.heal())

    def _run(self) -> None:
        actions: list[tuple[str, float, Callable[[], str | None]]] = [
            ("worker SIGKILL", 3.0, self._kill_worker),
            ("beat SIGKILL", 1.5, lambda: self.cluster.kill_beat(self._down())),
            ("redis restart", 1.0, self._restart_redis),
            ("voltage outage", 1.0, lambda: self.cluster.voltage_outage(self._down(1, 4))),
            ("subscriber outage", 1.5, self._subscriber_outage),
            ("subscriber hang", 1.0, self._subscriber_hang),
            ("list outage", 1.0, self.lists.list_outage),
            ("updated_at backdate", 1.0, self.lists.backdate),
            ("list lag", 1.0, self.lists.lag),
        ]
        names, weights, calls = zip(*actions, strict=True)
        # Every kind of fault once, in random order, before the weighted draws: even a short
        # run is sure to have killed each process, restarted Redis and opened each list window.
        first = self.rng.sample(range(len(names)), len(names))
        while not self.stop_event.wait(self.rng.uniform(*self.params.chaos_gap)):
            index = first.pop() if first else self._draw(names, weights)
            self._note_crashes(self.cluster.restart_crashed())
            try:
                started = time.time()
                label = calls[index]() or names[index]
                self.done[label] += 1
                if names[index] not in WINDOW_KINDS:  # windows are in the timeline when closed
                    self.timeline.append((started, time.time(), label))
            except Exception as exc:
                self.errors.append(f"{names[index]} failed: {exc!r}")

    def _draw(self, names: tuple[str, ...], weights: tuple[float, ...]) -> int:
        """A weighted draw among the faults that can start now (one window of a kind at once)."""
        free = [0.0 if self.lists.busy(name) else w for name, w in zip(names, weights, strict=True)]
        return self.rng.choices(range(len(names)), free)[0]

    def _note_crashes(self, crashed: list[str]) -> None:
        self.errors += [f"{name} exited without being killed" for name in crashed]

    def _down(self, low: float = 0.5, high: float = 3.0) -> float:
        return self.rng.uniform(low, high)

    def _kill_worker(self) -> None:
        self.cluster.kill_worker(self.rng, self._down())

    def _restart_redis(self) -> str:
        hard, self._hard_redis = self._hard_redis, not self._hard_redis
        self.cluster.restart_redis(hard=hard, down=self._down(0.5, 2.5))
        return "redis SIGKILL" if hard else "redis SIGTERM"

    def _subscriber_outage(self) -> None:
        candidates = [s for s in self.subscribers if s.spec.outages]
        self.rng.choice(candidates).outage(self._down(3, 10))

    def _subscriber_hang(self) -> None:
        candidates = [s for s in self.subscribers if s.spec.hangs]
        self.rng.choice(candidates).hang(self._down(3, 8))


def read_outbox(cluster: Cluster) -> list[OutboxEvent]:
    rt = cluster.rt
    events = []
    entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.payments.keys.outbox))
    for entry_id, fields in entries:
        events.append(
            OutboxEvent(
                entry_ms=int(entry_id.split("-")[0]),
                event_id=fields["event_id"],
                event_type=fields["type"],
                payment_id=fields["payment_id"],
            )
        )
    return events


def simulator_payments(cluster: Cluster) -> list[dict[str, Any]]:
    response = requests.get(cluster.simulator.control_url + "/payments", timeout=30)
    response.raise_for_status()
    return list(response.json()["items"])


@contextmanager
def running(cluster: Cluster, subscribers: list[ChaosSubscriber]) -> Iterator[None]:
    try:
        cluster.start()
        for sub in subscribers:
            sub.start()
        yield
    finally:
        for sub in subscribers:
            sub.stop()
        cluster.stop()


def run_chaos(
    params: ChaosParams, workdir: Path, log: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    plan = make_plan(params)
    cluster = Cluster(workdir, workers=params.workers, seed=params.seed)
    subscribers = [ChaosSubscriber(spec, params.seed + i) for i, spec in enumerate(SUBSCRIBERS)]
    started = time.time()
    with running(cluster, subscribers):
        if cluster.redis_config("appendfsync") != "always":
            raise RuntimeError("the suite's Redis must fsync every write (appendfsync always)")
        for sub in subscribers:
            subscription, secret = cluster.rt.subscriptions.create(
                url=sub.url(),
                event_types=list(sub.spec.event_types) if sub.spec.event_types else None,
                metadata_filter={"shop": sub.spec.shop} if sub.spec.shop else None,
                description=f"fault suite: {sub.spec.name}",
            )
            sub.subscribed(subscription.id, secret)
        wallet = cluster.rt.settings.voltage_wallet_id or ""
        planned = {payment_id_for_client_id(wallet, p.client_id): p for p in plan.payments}

        t0 = time.time()
        load = Load(cluster, t0)
        faults = Faults(cluster, subscribers, params)
        try:
            faults.start()
            for payment in plan.payments:
                load.plan_payment(payment)
            chaos_end = t0 + params.chaos_duration
            load_thread = threading.Thread(
                target=load.run, args=(chaos_end + params.drain_timeout,), daemon=True
            )
            load_thread.start()
            log(f"load and faults running for {params.chaos_duration:.0f} s")
            while time.time() < chaos_end:  # the faults run for their whole duration
                time.sleep(0.5)
            faults.stop()
        finally:  # a run that fails still leaves the simulator's list config at 0
            faults.lists.close_all()
        log(f"faults stopped: {dict(faults.done)}; waiting for everything to arrive")
        load_thread.join(params.drain_timeout)

        def everything_arrived() -> bool:
            report = collect(cluster, planned, subscribers)
            return report.not_final == 0 and not report.problems()

        deadline = time.time() + params.drain_timeout
        while time.time() < deadline and not everything_arrived():
            time.sleep(1.0)
        # A few more ticks, so a late duplicate or a stray event would be seen.
        ticks = cluster.rt.payments.counters().get("dispatch_ticks", 0)
        settle_deadline = time.time() + 30
        while (
            cluster.rt.payments.counters().get("dispatch_ticks", 0) < ticks + 10
            and time.time() < settle_deadline
        ):
            time.sleep(0.2)
        report = collect(cluster, planned, subscribers)
        report.faults = faults.done
        report.faults.update({f"app retries ({k})": v for k, v in load.retries.items()})
        report.faults["hidden from filtered lists"] = load.hidden
        report.watcher_counters = cluster.rt.payments.counters()
        report.harness_errors = load.errors + faults.errors
        for begin, end, what in faults.timeline:
            log(f"fault at +{begin - t0:6.1f} s .. +{end - t0:6.1f} s: {what}")
        for pid, delay in report.slowest_detections:
            final_at = delay[1] - t0
            log(f"slow detection: {pid} final at +{final_at:6.1f} s, seen {delay[0]:.1f} s later")
    # The hanging phase has a deployment of its own: the default layout, production defaults.
    log("hanging phase: the default layout under a subscriber that holds every request 60 s")
    report.hanging = run_hanging_phase(workdir / "hanging", log)
    if params.sentinel_payments:
        log("sentinel phase: the Redis master SIGKILLed under load, its replica promoted")
        report.failover = run_failover_phase(
            workdir / "sentinel", log, payments=params.sentinel_payments, seed=params.seed
        )
    report.seconds = time.time() - started
    return report


def collect(
    cluster: Cluster, planned: dict[str, PlannedPayment], subscribers: list[ChaosSubscriber]
) -> ChaosReport:
    receipts = []
    for sub in subscribers:
        with sub.receiver._lock:
            receipts.append((sub.spec, list(sub.receipts)))
    return build_report(
        planned=planned,
        simulator_payments=simulator_payments(cluster),
        outbox=read_outbox(cluster),
        subscribers=receipts,
    )
