"""The deployment under fire: its own AOF Redis, the simulator, workers and beat, each of which
the fault thread can kill and bring back."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from pathlib import Path

import redis

from tests.support import CeleryProcess, beat_command, clean_env, stack_values, worker_command
from watcher.launcher import stop_all
from watcher.redis_server import RedisServer
from watcher.runtime import Runtime
from watcher.settings import Settings, load_settings
from watcher.simulator import SimulatorConfig
from watcher.simulator.server import SimulatorServer

SIM_KEY = "sim-key-for-the-fault-suite-0123"

# Short timeouts so that hangs and faults cost seconds, a retry schedule that outlasts every
# subscriber outage the fault thread opens (about 70 s of retries), and reconciliation at a test
# pace (a pass at most every 15 s, a page a second; production: 60 s and 5 s), so what only it
# can find (hidden from filtered lists, updated_at back-dated past the overlap) costs seconds too.
CHAOS_SETTINGS = {
    "WATCHER_WEBHOOK_ALLOW_PRIVATE": "true",
    "WATCHER_WEBHOOK_RETRY_SCHEDULE": "0,0.5,1,2,3,5,5,5,5,5,5,5,5,5,5,5",
    "WATCHER_WEBHOOK_CONNECT_TIMEOUT": "1",
    "WATCHER_WEBHOOK_TIMEOUT": "2",
    "WATCHER_DELIVERY_LEASE": "6",
    "WATCHER_CLAIM_LEASE": "5",
    "VOLTAGE_CONNECT_TIMEOUT": "1",
    "VOLTAGE_READ_TIMEOUT": "2",
    "VOLTAGE_INVOICE_WAIT": "5",
    "WATCHER_EXPIRY_GRACE": "2",
    "WATCHER_RECONCILE_INTERVAL": "15",
    "WATCHER_RECONCILE_PAGE_INTERVAL": "1",
}


class Cluster:
    """Everything a watcher deployment runs, started on loopback under `workdir`."""

    def __init__(self, workdir: Path, *, workers: int, seed: int) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        # AOF with `appendfsync always`, as deploy/redis.conf: a SIGKILL loses nothing acked.
        self.redis = RedisServer(workdir / "redis", appendonly=True)
        self.simulator = SimulatorServer(
            SimulatorConfig(
                api_keys={SIM_KEY: frozenset({"read", "receive", "write"})},
                not_found_window=0.2,
                generating_delay=0.1,
                seed=seed,
            )
        )
        self.worker_names = [f"w{i + 1}" for i in range(workers)]
        self.workers: dict[str, CeleryProcess] = {}
        self.beat: CeleryProcess | None = None
        self.env: dict[str, str] = {}
        self.settings: Settings | None = None
        self.runtime: Runtime | None = None
        self._lock = threading.Lock()

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.redis.start()
        self.simulator.start()
        values = stack_values(
            redis_url=self.redis.url,
            voltage_url=self.simulator.base_url,
            api_key=SIM_KEY,
            data_dir=self.workdir / "data",
            **CHAOS_SETTINGS,
        )
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.env = clean_env(**values)
        self.settings = load_settings(**{k.lower(): v for k, v in values.items()})
        self.runtime = Runtime.from_settings(self.settings)
        for name in self.worker_names:
            self.start_worker(name)
        self.start_beat()

    def stop(self) -> None:
        with self._lock:
            stop_all([*self.workers.values(), *([self.beat] if self.beat else [])], timeout=15.0)
            if self.runtime is not None:
                self.runtime.redis.close()
            self.simulator.stop()
            self.redis.stop()

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None, "the cluster is not started"
        return self.runtime

    def start_worker(self, name: str) -> None:
        proc = CeleryProcess(
            worker_command(name, concurrency=4), self.env, self._log(f"worker-{name}")
        ).start()
        self.workers[name] = proc
        proc.wait_ready()

    def start_beat(self) -> None:
        self.beat = CeleryProcess(
            beat_command(self.workdir / "beat-schedule"), self.env, self._log("beat")
        ).start()

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log"

    # --- faults ----------------------------------------------------------------------------------
    def kill_worker(self, rng: random.Random, down: float) -> str:
        """SIGKILL one worker mid-work (no acks, nothing flushed), then start a new one."""
        name = rng.choice(self.worker_names)
        self.workers[name].kill()
        time.sleep(down)
        self.start_worker(name)
        return name

    def kill_beat(self, down: float) -> None:
        if self.beat is not None:
            self.beat.kill()
        time.sleep(down)
        self.start_beat()

    def restart_redis(self, *, hard: bool, down: float) -> None:
        """SIGKILL (hard) or SIGTERM Redis and start it again on the same port from its AOF."""
        if hard:
            self.redis.kill()
        else:
            self.redis.stop()
        time.sleep(down)
        self.redis.start(timeout=30)

    def voltage_outage(self, down: float) -> None:
        """Voltage unreachable: connection refused for `down` seconds, same state after."""
        self.simulator.stop()
        time.sleep(down)
        self.simulator.start()

    def restart_crashed(self) -> list[str]:
        """Start again any worker or beat that exited without being killed, and name them:
        between two faults every process must be alive, so a dead one crashed by itself."""
        crashed = []
        for name, proc in list(self.workers.items()):
            if not proc.alive:
                crashed.append(f"worker {name} ({proc.log_path.name})")
                self.start_worker(name)
        if self.beat is not None and not self.beat.alive:
            crashed.append(f"beat ({self.beat.log_path.name})")
            self.start_beat()
        return crashed

    def heal(self) -> list[str]:
        """After the faults: every component up again; returns the processes that crashed."""
        if self.redis.process is None:
            self.redis.start(timeout=30)
        if not self.simulator.running:
            self.simulator.start()
        return self.restart_crashed()

    def redis_config(self, name: str) -> str:
        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        with contextlib.closing(client):
            return str(client.config_get(name).get(name, ""))
