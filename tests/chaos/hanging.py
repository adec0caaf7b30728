"""The fault suite's hanging phase: the default process layout under one subscriber that holds
every request for 60 s, beside two healthy ones.

The rest of the suite runs a tuned cluster (thread pools, 2 s webhook timeouts) to pack many
faults into a short run; this phase is what a user of the Procfile gets: one prefork worker
with as many slots as the machine has CPUs (2 on the reference machine), beat, and every
production default. It settles payments in waves and measures, at the healthy subscribers,
how long each verified webhook took from the settle, and how long detection took.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support import CeleryProcess, clean_env, wait_until
from watcher.engine.watching import create_and_watch
from watcher.launcher import stop_all
from watcher.receiver import Answer, Receiver
from watcher.redis_server import RedisServer
from watcher.runtime import Runtime
from watcher.settings import load_settings
from watcher.simulator import SimulatorConfig
from watcher.simulator.server import SimulatorServer

SIM_KEY = "sim-key-for-the-hanging-phase-01"
HANG = 60.0
HEALTHY = 2
# The waves: (seconds from the start, how many payments settle then).
WAVES = ((0.0, 10), (10.0, 10), *((20.0 + 3.0 * i, 1) for i in range(10)))
DRAIN = 60.0  # after the last settle, every healthy webhook must be there by then


@dataclass
class HangingReport:
    payments: int = 0
    delivered: int = 0  # (payment, healthy subscriber) pairs holding a verified webhook
    expected: int = 0
    duplicates: int = 0  # extra copies at the healthy subscribers (same webhook-id)
    unverified: int = 0
    hanging_attempts: int = 0
    delivery_ms: list[float] = field(default_factory=list)  # settle -> verified webhook
    detection_ms: list[float] = field(default_factory=list)  # settle -> transition written
    ticks_per_second: float = 0.0

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"hanging phase: {self.lost} healthy deliveries missing")
        if self.unverified:
            found.append(f"hanging phase: {self.unverified} webhooks failed verification")
        if self.duplicates:
            found.append(f"hanging phase: {self.duplicates} duplicates at healthy subscribers")
        return found

    def format(self) -> str:
        def pct(values: list[float]) -> str:
            if not values:
                return "-"
            ordered = sorted(values)
            at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99)]
            return f"p50 {at[0]:,.0f} / p99 {at[1]:,.0f} / max {ordered[-1]:,.0f} ms"

        return "\n".join(
            [
                f"hanging phase (default layout: prefork worker x2, beat; one subscriber "
                f"holding every request {HANG:.0f} s, {HEALTHY} healthy)",
                f"  payments settled in waves    {self.payments}",
                f"  healthy deliveries           {self.delivered} of {self.expected} "
                f"(lost {self.lost}, duplicated {self.duplicates})",
                f"  settle -> healthy webhook    {pct(self.delivery_ms)}",
                f"  settle -> detection          {pct(self.detection_ms)}",
                f"  dispatcher ticks per second  {self.ticks_per_second:.2f}",
                f"  attempts at the hanging one  {self.hanging_attempts}",
            ]
        )


def _settings(redis_url: str, voltage_url: str, data_dir: Path) -> dict[str, str]:
    """Production defaults but for the machine-local bits a test has to set."""
    return {
        "WATCHER_REDIS_URL": redis_url,
        "WATCHER_DATA_DIR": str(data_dir),
        "VOLTAGE_API_URL": voltage_url,
        "VOLTAGE_API_KEY": SIM_KEY,
        "VOLTAGE_ORGANIZATION_ID": "org-hang",
        "VOLTAGE_ENVIRONMENT_ID": "env-hang",
        "VOLTAGE_WALLET_ID": "wallet-hang",
        "WATCHER_WEBHOOK_ALLOW_PRIVATE": "true",
        "WATCHER_LOG_FORMAT": "json",
    }


def _verified_first_arrivals(
    receiver: Receiver, secret: str, report: HangingReport
) -> dict[str, float]:
    """payment id -> time of its first verified webhook at this receiver."""
    first: dict[str, float] = {}
    for got in list(receiver.received):
        try:
            Webhook(secret).verify(got.body, got.headers)
        except WebhookVerificationError:
            report.unverified += 1
            continue
        payment_id = json.loads(got.body)["data"]["payment_id"]
        if payment_id in first:
            report.duplicates += 1
        else:
            first[payment_id] = got.at
    return first


def run_hanging_phase(workdir: Path, log: Callable[[str], None] = print) -> HangingReport:
    report = HangingReport()
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir / "redis").start()
    config = SimulatorConfig(api_keys={SIM_KEY: frozenset({"read", "receive", "write"})})
    simulator = SimulatorServer(config).start()
    hanging = Receiver()
    hanging.default = Answer(status=204, body=b"", delay=HANG)
    healthy = [Receiver() for _ in range(HEALTHY)]
    for receiver in healthy:
        receiver.default = Answer(status=204, body=b"")
    processes: list[CeleryProcess] = []
    values = _settings(redis_server.url, simulator.base_url, workdir / "data")
    (workdir / "data").mkdir(exist_ok=True)
    rt = Runtime.from_settings(load_settings(**{k.lower(): v for k, v in values.items()}))
    try:
        for receiver in (hanging, *healthy):
            receiver.start()
        rt.subscriptions.create(url=hanging.url(), description="hanging phase: hangs")
        secrets = [
            rt.subscriptions.create(url=r.url(), description="hanging phase: healthy")[1]
            for r in healthy
        ]
        env = clean_env(**values)
        worker = CeleryProcess(
            ["worker", "--concurrency", "2", "--loglevel", "INFO"], env, workdir / "worker.log"
        ).start()
        processes.append(worker)
        worker.wait_ready()
        beat = ["beat", "--loglevel", "INFO", "-s", str(workdir / "beat-schedule")]
        processes.append(CeleryProcess(beat, env, workdir / "beat.log").start())
        total = sum(n for _, n in WAVES)
        ids = [create_and_watch(rt, amount_msats=1_000 + i).record.id for i in range(total)]
        settled_at, report.ticks_per_second = _settle_in_waves(simulator.control_url, ids, rt)
        report.payments = len(ids)
        report.expected = len(ids) * HEALTHY
        # Until each healthy subscriber holds every payment, or the drain deadline.
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: all(len(r.received) >= len(ids) for r in healthy),
                timeout=DRAIN,
                interval=0.2,
            )
        _measure(report, rt, settled_at, healthy, secrets)
        report.hanging_attempts = len(hanging.received)
        log(f"hanging phase: {report.delivered} of {report.expected} healthy deliveries")
    finally:
        stop_all(processes, timeout=15.0)
        for receiver in (hanging, *healthy):
            receiver.stop()
        rt.redis.close()
        simulator.stop()
        redis_server.stop()
    return report


def _settle_in_waves(
    control_url: str, ids: list[str], rt: Runtime
) -> tuple[dict[str, float], float]:
    """Settle by the WAVES timetable (pacing the load, not waiting for anything); returns
    when each settled and the dispatcher ticks per second meanwhile."""
    session = requests.Session()
    settled_at: dict[str, float] = {}
    started = time.monotonic()
    paced = threading.Event()
    remaining = iter(ids)
    ticks_before = rt.payments.counters().get("dispatch_ticks", 0)
    for offset, count in WAVES:
        paced.wait(max(0.0, started + offset - time.monotonic()))
        for _ in range(count):
            payment_id = next(remaining)
            session.post(f"{control_url}/payments/{payment_id}/settle", timeout=10)
            settled_at[payment_id] = time.time()
    ticks = rt.payments.counters().get("dispatch_ticks", 0) - ticks_before
    return settled_at, ticks / max(time.monotonic() - started, 1e-9)


def _measure(
    report: HangingReport,
    rt: Runtime,
    settled_at: dict[str, float],
    healthy: list[Receiver],
    secrets: list[str],
) -> None:
    for receiver, secret in zip(healthy, secrets, strict=True):
        arrivals = _verified_first_arrivals(receiver, secret, report)
        for payment_id, at in arrivals.items():
            if payment_id in settled_at:
                report.delivered += 1
                report.delivery_ms.append((at - settled_at[payment_id]) * 1000)
    for payment_id, at in settled_at.items():
        finals = [t for t in rt.payments.transitions(payment_id) if t.get("to") == "completed"]
        if finals:
            report.detection_ms.append((float(finals[0]["at"]) - at) * 1000)
