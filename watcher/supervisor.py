"""`watcher up`: every process on one machine, one log stream, until Ctrl-C.

Without WATCHER_REDIS_URL it starts an embedded redis-server that appends every write to
WATCHER_DATA_DIR/redis (AOF), so stopping and starting again loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from watcher.logging import get_logger
from watcher.redis_server import RedisServer, free_port
from watcher.settings import Settings

log = get_logger(__name__)

SIMULATOR_KEY = "sim-key"
# A child that keeps dying is not restarted forever: this many restarts a minute at most.
MAX_RESTARTS_PER_MINUTE = 5


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True)  # noqa: S603

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)


@dataclass
class UpOptions:
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    simulate: bool = False
    simulator_port: int = 8090
    flower_port: int | None = 5555
    worker_concurrency: int | None = None


class Supervisor:
    def __init__(self, settings: Settings, options: UpOptions) -> None:
        self.settings = settings
        self.options = options
        self.redis: RedisServer | None = None
        self.children: list[Child] = []
        self.env: dict[str, str] = dict(os.environ)
        self._stopping = threading.Event()

    # --- start -------------------------------------------------------------------------------
    def start(self) -> None:
        data_dir = Path(self.settings.watcher_data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env["WATCHER_DATA_DIR"] = str(data_dir)
        if not self.settings.watcher_redis_url:
            # Known to stop() before it starts: a Ctrl-C mid-start must not orphan it.
            self.redis = RedisServer(data_dir / "redis", appendonly=True)
            self.redis.start()
            self.env["WATCHER_REDIS_URL"] = self.redis.url
            log.info("embedded redis started", url=self.redis.url, data_dir=str(data_dir / "redis"))
        python = sys.executable
        if self.options.simulate:
            self._start_simulator(python)
        else:
            self.settings.require_voltage()
        concurrency = (
            ["--concurrency", str(self.options.worker_concurrency)]
            if self.options.worker_concurrency
            else []
        )
        self.children += [
            Child(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "watcher",
                    "worker",
                    "--loglevel",
                    "INFO",
                    *concurrency,
                ],
            ),
            Child(
                "beat",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "watcher",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "-s",
                    str(data_dir / "celerybeat-schedule"),
                ],
            ),
            Child(
                "api",
                [
                    python,
                    "-m",
                    "watcher",
                    "api",
                    "--host",
                    self.options.api_host,
                    "--port",
                    str(self.options.api_port),
                ],
            ),
        ]
        if self.options.flower_port:
            self.children.append(
                Child(
                    "flower",
                    [python, "-m", "watcher", "flower", "--port", str(self.options.flower_port)],
                )
            )
        for child in self.children:
            if not child.alive:
                child.start(self.env)
        log.info(
            "watcher is up",
            api=f"http://{self.options.api_host}:{self.options.api_port}",
            processes=[c.name for c in self.children],
        )

    def _start_simulator(self, python: str) -> None:
        port = self.options.simulator_port or free_port()
        self.env.update(
            VOLTAGE_API_URL=f"http://127.0.0.1:{port}/v1",
            VOLTAGE_API_KEY=SIMULATOR_KEY,
            VOLTAGE_ORGANIZATION_ID=self.settings.voltage_organization_id or "sim-org",
            VOLTAGE_ENVIRONMENT_ID=self.settings.voltage_environment_id or "sim-env",
            VOLTAGE_WALLET_ID=self.settings.voltage_wallet_id or "sim-wallet",
        )
        child = Child(
            "simulator",
            [python, "-m", "watcher", "simulator", "--port", str(port), "--api-key", SIMULATOR_KEY],
        )
        child.start(self.env)
        self.children.append(child)
        banner = "=" * 72
        print(
            f"{banner}\n  SIMULATED VOLTAGE: payments are NOT real. Simulator on "
            f"http://127.0.0.1:{port}/v1\n  settle one: curl -X POST "
            f"http://127.0.0.1:{port}/_sim/payments/<id>/settle\n{banner}",
            file=sys.stderr,
            flush=True,
        )

    # --- run and stop ------------------------------------------------------------------------
    def run(self) -> int:
        """Watch the children until asked to stop; restart one that dies, within limits."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stopping.set())
        try:
            while not self._stopping.wait(0.5):
                for child in self.children:
                    if child.alive:
                        continue
                    if not self._restart(child):
                        return 1
            return 0
        finally:
            self.stop()

    def _restart(self, child: Child) -> bool:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < 60] + [now]
        code = child.process.returncode if child.process else None
        if len(child.restarts) > MAX_RESTARTS_PER_MINUTE:
            log.error("process keeps dying; stopping everything", process=child.name, code=code)
            return False
        log.warning("process died; restarting it", process=child.name, code=code)
        child.start(self.env)
        return True

    def stop(self, timeout: float = 20.0) -> None:
        for child in reversed(self.children):
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.signal(signal.SIGKILL)
                child.process.wait(5)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        log.info("watcher stopped")
