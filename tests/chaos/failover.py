"""The fault suite's Sentinel phase (long mode): the Redis master is SIGKILLed under load, the
sentinel promotes its replica, and nothing may be lost.

Redis replicates asynchronously, so the promoted replica may lack the master's last
acknowledged writes. The watcher runs with WATCHER_REDIS_MIN_REPLICAS=1 as docs/operations.md
tells Sentinel users to: a new watch is confirmed only once the replica holds it, and an
application retries a create that was not confirmed (same client id). Everything else that a
failover can lose heals by itself: a transition is detected again with the same event id, a
delivery is re-sent with the same `webhook-id`.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.chaos.cluster import CHAOS_SETTINGS
from tests.support import (
    CeleryProcess,
    beat_command,
    clean_env,
    stack_values,
    wait_until,
    worker_command,
)
from watcher.engine.watching import create_and_watch
from watcher.launcher import stop_all
from watcher.receiver import Receiver
from watcher.redis_server import RedisServer, find_redis_server, free_port
from watcher.runtime import Runtime
from watcher.settings import load_settings
from watcher.simulator import SimulatorConfig
from watcher.simulator.server import SimulatorServer

SIM_KEY = "sim-key-for-the-failover-phase-1"
MASTER = "watched"


@dataclass
class FailoverReport:
    payments: int = 0
    delivered: int = 0
    duplicates: int = 0  # extra copies under the same webhook-id (allowed, and said)
    wrong: int = 0  # a payment announced under two webhook-ids, or unverified
    failover_seconds: float | None = None  # master SIGKILL -> sentinel names the replica
    create_retries: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.payments - self.delivered

    def problems(self) -> list[str]:
        found = [f"sentinel phase: {e}" for e in self.errors]
        if self.lost:
            found.append(f"sentinel phase: {self.lost} payments never delivered")
        if self.wrong:
            found.append(f"sentinel phase: {self.wrong} wrong deliveries")
        return found

    def format(self) -> str:
        took = "-" if self.failover_seconds is None else f"{self.failover_seconds:.1f} s"
        return "\n".join(
            [
                "sentinel phase (master SIGKILLed under load, replica promoted, "
                "WATCHER_REDIS_MIN_REPLICAS=1)",
                f"  payments settled             {self.payments}",
                f"  delivered                    {self.delivered} (lost {self.lost}, "
                f"duplicated {self.duplicates} under the same webhook-id, wrong {self.wrong})",
                f"  failover took                {took}",
                f"  creates retried by the app   {self.create_retries}",
            ]
        )


class Sentinel:
    """One sentinel (quorum 1) watching `master`, quick to declare it down."""

    def __init__(self, workdir: Path, master_port: int) -> None:
        self.port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        self.process = subprocess.Popen(
            [find_redis_server(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, socket_timeout=1, decode_responses=True)

    def master_port(self) -> int | None:
        with contextlib.suppress(redis.RedisError):
            addr = self.client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            return int(addr[1]) if addr else None
        return None

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


def _in_sync(master: RedisServer) -> bool:
    client = redis.Redis(port=master.port, decode_responses=True)
    with contextlib.closing(client):
        return bool((client.info("replication").get("slave0") or {}).get("state") == "online")


def _verify_all(receiver: Receiver, secret: str, report: FailoverReport) -> set[str]:
    """Payment ids holding a verified webhook; counts duplicates and wrong ones."""
    ids_of: dict[str, set[str]] = {}
    copies = 0
    for got in list(receiver.received):
        try:
            Webhook(secret).verify(got.body, got.headers)
        except WebhookVerificationError:
            report.wrong += 1
            continue
        payment_id = json.loads(got.body)["data"]["payment_id"]
        ids_of.setdefault(payment_id, set()).add(got.headers["webhook-id"])
        copies += 1
    report.wrong += sum(len(ids) - 1 for ids in ids_of.values())
    report.duplicates = copies - len(ids_of)
    return set(ids_of)


def run_failover_phase(
    workdir: Path, log: Callable[[str], None] = print, payments: int = 120, seed: int = 7
) -> FailoverReport:
    report = FailoverReport(payments=payments)
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    master = RedisServer(workdir / "master", appendonly=True).start()
    replica_args = ["--replicaof", "127.0.0.1", str(master.port)]
    replica = RedisServer(workdir / "replica", appendonly=True, extra_args=replica_args).start()
    sentinel = Sentinel(workdir, master.port)
    simulator = SimulatorServer(
        SimulatorConfig(api_keys={SIM_KEY: frozenset({"read", "receive", "write"})}, seed=seed)
    ).start()
    receiver = Receiver().start()
    processes: list[CeleryProcess] = []
    rt: Runtime | None = None
    try:
        wait_until(sentinel.master_port, timeout=30, message="the sentinel to know the master")
        wait_until(lambda: _in_sync(master), timeout=30, message="the replica to be in sync")
        values = stack_values(
            redis_url=f"sentinel://127.0.0.1:{sentinel.port}/0",
            voltage_url=simulator.base_url,
            api_key=SIM_KEY,
            data_dir=workdir / "data",
            **CHAOS_SETTINGS,
            WATCHER_REDIS_SENTINEL_MASTER=MASTER,
            WATCHER_REDIS_MIN_REPLICAS="1",
        )
        (workdir / "data").mkdir(exist_ok=True)
        env = clean_env(**values)
        rt = Runtime.from_settings(load_settings(**{k.lower(): v for k, v in values.items()}))
        _, secret = rt.subscriptions.create(url=receiver.url(), description="sentinel phase")
        worker = CeleryProcess(worker_command("fw"), env, workdir / "worker.log").start()
        processes.append(worker)
        worker.wait_ready()
        beat = CeleryProcess(beat_command(workdir / "beat-schedule"), env, workdir / "beat.log")
        processes.append(beat.start())
        _load_with_failover(rt, simulator, master, sentinel, report, rng, payments, log)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: len(_verify_all(receiver, secret, FailoverReport())) >= payments,
                timeout=180,
                interval=0.5,
            )
        report.delivered = len(_verify_all(receiver, secret, report))
        report.errors += [f"{p.command[0]} exited" for p in processes if not p.alive]
        log(f"sentinel phase: {report.delivered} of {payments} delivered")
    finally:
        stop_all(processes, timeout=15.0)
        if rt is not None:
            rt.redis.close()
        receiver.stop()
        simulator.stop()
        sentinel.stop()
        replica.stop()
        master.stop()
    return report


def _load_with_failover(
    rt: Runtime,
    simulator: SimulatorServer,
    master: RedisServer,
    sentinel: Sentinel,
    report: FailoverReport,
    rng: random.Random,
    payments: int,
    log: Callable[[str], None],
) -> None:
    """Create and settle `payments` over about 30 s, SIGKILL the master a third of the way."""
    control = requests.Session()
    paced = threading.Event()
    kill_at = payments // 3
    for index in range(payments):
        if index == kill_at:
            old_port = master.port
            killed = time.monotonic()
            master.kill()
            log("sentinel phase: master SIGKILLed")
            wait_until(
                lambda old=old_port: sentinel.master_port() not in (None, old),
                timeout=60,
                message="the sentinel to promote the replica",
            )
            report.failover_seconds = time.monotonic() - killed
            # Back on its port, the old master is made a replica of the new one by the
            # sentinel; until it syncs, new watches are refused (no replica) and retried.
            master.start(timeout=30)
        payment_id = _create(rt, index, report)
        paced.wait(rng.uniform(0.05, 0.4))
        response = control.post(f"{simulator.control_url}/payments/{payment_id}/settle", timeout=10)
        response.raise_for_status()


def _create(rt: Runtime, index: int, report: FailoverReport) -> str:
    """As an application does: retry with the same client id until the watch is confirmed."""
    deadline = time.monotonic() + 120
    pause = threading.Event()
    while True:
        try:
            result = create_and_watch(rt, amount_msats=1_000 + index, client_id=f"fo-{index}")
        except Exception:
            if time.monotonic() > deadline:
                raise
            report.create_retries += 1
            pause.wait(0.3)
        else:
            return result.record.id
