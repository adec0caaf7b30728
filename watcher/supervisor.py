"""`watcher up`: every process on one machine, one log stream, until Ctrl-C.

Without WATCHER_REDIS_URL it starts an embedded redis-server that appends every write to
WATCHER_DATA_DIR/redis (AOF), so stopping and starting again loses nothing. Its password lives in
WATCHER_DATA_DIR/redis.password (0600); WATCHER_DATA_DIR/watcher.lock keeps a second instance
off the same data.
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
from typing import Protocol

from watcher.logging import get_logger, register_secrets
from watcher.preflight import DataDirLock, check_port_free
from watcher.redis_server import (
    RedisServer,
    RedisServerError,
    free_port,
    load_or_create_password,
    make_private,
)
from watcher.settings import Settings, mask_redis_url
from watcher.stack import SimulatedVoltage, Stack, remove_stack, write_stack
from watcher.unknown_settings import REPORTED_MARK

log = get_logger(__name__)

SIMULATOR_KEY = "sim-key"
PASSWORD_FILE = "redis.password"  # noqa: S105 - a file name, not a password
SIMULATOR_STATE_FILE = "simulator.jsonl"
# A child that keeps dying is not restarted forever: this many restarts a minute at most.
MAX_RESTARTS_PER_MINUTE = 5
# Restart delays double from FIRST up to CAP; a process that ran HEALTHY_AFTER seconds before
# dying starts over at FIRST (a crash a day is not a crash loop).
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
HEALTHY_AFTER = 60.0
WATCH_INTERVAL = 0.25


@dataclass
class Backoff:
    """When a dead process may start again: exponential and capped, and not forever."""

    consecutive: int = 0
    restarts: list[float] = field(default_factory=list)
    started_at: float = 0.0
    due: float | None = None  # while it is down: when it starts again

    def died(self, now: float) -> float | None:
        """The delay before the next start, or None: it keeps dying, give up."""
        if now - self.started_at >= HEALTHY_AFTER:
            self.consecutive = 0
        self.restarts = [t for t in self.restarts if now - t < 60]
        if len(self.restarts) >= MAX_RESTARTS_PER_MINUTE:
            return None
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * (1 << min(self.consecutive, 16)))
        self.consecutive += 1
        self.due = now + delay
        return delay

    def launched(self, now: float, *, restart: bool) -> None:
        self.due = None
        self.started_at = now
        if restart:
            self.restarts.append(now)


class Supervised(Protocol):
    """What the watch loop needs of a process: the children and the embedded Redis."""

    name: str
    backoff: Backoff

    @property
    def alive(self) -> bool: ...

    @property
    def exit_code(self) -> int | None: ...

    def start(self, env: dict[str, str]) -> None: ...


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True)  # noqa: S603

    @property
    def alive(self) -> bool:
        """Running; asking reaps a dead one (no zombie)."""
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def signal(self, signum: int) -> None:
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)


@dataclass
class EmbeddedRedis:
    """The embedded RedisServer as a supervised process: same port, data dir and password."""

    server: RedisServer
    name: str = "redis"
    backoff: Backoff = field(default_factory=Backoff)

    @property
    def alive(self) -> bool:
        return self.server.alive

    @property
    def exit_code(self) -> int | None:
        return self.server.returncode

    def start(self, env: dict[str, str]) -> None:
        self.server.start()


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
        self._lock: DataDirLock | None = None
        self._embedded: EmbeddedRedis | None = None
        self._started_anything = False
        self._data_dir: Path | None = None
        self._simulated: SimulatedVoltage | None = None

    # --- start -------------------------------------------------------------------------------
    def start(self) -> None:
        data_dir = Path(self.settings.watcher_data_dir).resolve()
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = DataDirLock(data_dir)
        lock_fd = self._lock.acquire()
        self.check_ports()
        make_private(data_dir)  # 0700, and files older versions left 0644 become 0600
        self._started_anything = True
        self._data_dir = data_dir
        self.env["WATCHER_DATA_DIR"] = str(data_dir)
        self.env[REPORTED_MARK] = "1"  # `watcher up` has warned; its children need not
        os.umask(0o077)  # what the children write here (beat's schedule) is private too
        if not self.settings.watcher_redis_url:
            self._start_embedded_redis(data_dir, lock_fd)
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
                    "--quiet",  # no ASCII banner: "watcher is up" says what runs
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
                    "--quiet",  # no ASCII banner: "watcher is up" says what runs
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
                child.backoff.launched(time.monotonic(), restart=False)
        api_url = f"http://{self.options.api_host}:{self.options.api_port}"
        stack = Stack(
            pid=os.getpid(),
            api_url=api_url,
            data_dir=str(data_dir),
            redis_url=self.redis.url if self.redis is not None else None,
            simulator=self._simulated,
            webhook_allow_private=self.settings.watcher_webhook_allow_private,
        )
        stack_file = write_stack(stack)
        if self._simulated is not None:
            print(simulate_banner(stack, self.settings), file=sys.stderr, flush=True)
        log.info(
            "watcher is up",
            api=api_url,
            processes=[c.name for c in self.children],
            stack_file=str(stack_file),
        )

    def check_ports(self) -> None:
        """Every port a child will listen on, before anything starts."""
        options = self.options
        check_port_free(options.api_host, options.api_port, "API", "--port")
        if options.flower_port:
            check_port_free("127.0.0.1", options.flower_port, "Flower", "--flower-port")
        if options.simulate and options.simulator_port:
            check_port_free("127.0.0.1", options.simulator_port, "simulator", "--simulator-port")

    def _start_embedded_redis(self, data_dir: Path, lock_fd: int) -> None:
        password = load_or_create_password(data_dir / PASSWORD_FILE)
        register_secrets([password])
        # Known to stop() before it starts: a Ctrl-C mid-start must not orphan it.
        self.redis = RedisServer(
            data_dir / "redis", appendonly=True, password=password, pass_fds=(lock_fd,)
        )
        self._embedded = EmbeddedRedis(self.redis)
        self.redis.start()
        self._embedded.backoff.launched(time.monotonic(), restart=False)
        self.env["WATCHER_REDIS_URL"] = self.redis.url
        log.info(
            "embedded redis started",
            url=mask_redis_url(self.redis.url),
            data_dir=str(data_dir / "redis"),
        )

    def _start_simulator(self, python: str) -> None:
        port = self.options.simulator_port or free_port()
        simulated = SimulatedVoltage(
            api_url=f"http://127.0.0.1:{port}/v1",
            api_key=SIMULATOR_KEY,
            organization_id=self.settings.voltage_organization_id or "sim-org",
            environment_id=self.settings.voltage_environment_id or "sim-env",
            wallet_id=self.settings.voltage_wallet_id or "sim-wallet",
        )
        self._simulated = simulated
        self.env.update(
            VOLTAGE_API_URL=simulated.api_url,
            VOLTAGE_API_KEY=simulated.api_key,
            VOLTAGE_ORGANIZATION_ID=simulated.organization_id,
            VOLTAGE_ENVIRONMENT_ID=simulated.environment_id,
            VOLTAGE_WALLET_ID=simulated.wallet_id,
        )
        assert self._data_dir is not None  # noqa: S101 - start() sets it first
        child = Child(
            "simulator",
            [
                python,
                "-m",
                "watcher",
                "simulator",
                "--port",
                str(port),
                "--api-key",
                SIMULATOR_KEY,
                # The simulated payments outlive a restart, as the watcher's records do.
                "--state-file",
                str(self._data_dir / SIMULATOR_STATE_FILE),
            ],
        )
        child.start(self.env)
        child.backoff.launched(time.monotonic(), restart=False)
        self.children.append(child)

    # --- run and stop ------------------------------------------------------------------------
    def run(self) -> int:
        """Watch every process until asked to stop; restart one that dies, with backoff."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stopping.set())
        try:
            while not self._stopping.wait(WATCH_INTERVAL):
                for proc in self._supervised():
                    if not self._tend(proc, time.monotonic()):
                        return 1
            return 0
        finally:
            self.stop()

    def _supervised(self) -> list[Supervised]:
        """Redis first: the others need it."""
        embedded: list[Supervised] = [self._embedded] if self._embedded is not None else []
        return [*embedded, *self.children]

    def _tend(self, proc: Supervised, now: float) -> bool:
        """Reap a dead process and schedule its restart, or restart it when due; False when
        it keeps dying and everything should stop."""
        backoff = proc.backoff
        if backoff.due is None:
            if proc.alive:
                return True
            code = proc.exit_code
            delay = backoff.died(now)
            fields = {"process": proc.name, "exit_code": code, "signal": _signal_name(code)}
            if delay is None:
                log.error(
                    "process keeps dying; stopping everything",
                    **fields,
                    restarts_last_minute=len(backoff.restarts),
                )
                return False
            log.warning("process died; restarting it", **fields, next_delay=delay)
            return True
        if now < backoff.due or self._stopping.is_set():
            return True
        backoff.launched(now, restart=True)
        try:
            proc.start(self.env)
        except (OSError, RedisServerError) as exc:
            # Not alive, so the next round counts it as another death and backs off further.
            log.warning("process did not start", process=proc.name, error=str(exc))
            return True
        log.info("process restarted", process=proc.name, restarts=backoff.consecutive)
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
        self._embedded = None
        if self._data_dir is not None:
            remove_stack(self._data_dir, os.getpid())
        if self._lock is not None:
            self._lock.release()  # last: nothing of ours touches the data dir any more
            self._lock = None
        if self._started_anything:
            log.info("watcher stopped")


def simulate_banner(stack: Stack, settings: Settings) -> str:
    """Everything a person needs to use what `--simulate` started, from another terminal."""
    sim = stack.simulator
    assert sim is not None  # noqa: S101 - only shown with --simulate
    data_dir = stack.data_dir
    tokens = (
        "a token from WATCHER_API_TOKENS"
        if settings.watcher_api_tokens
        else "none set: every /v1 call answers 401 until WATCHER_API_TOKENS has one"
    )
    rule = "=" * 78
    lines = [
        rule,
        "  SIMULATED VOLTAGE: payments are NOT real.",
        f"  API        {stack.api_url}   (Authorization: Bearer <{tokens}>)",
        f"  simulator  {sim.api_url}   key {sim.api_key}",
        f"             organization {sim.organization_id}, environment {sim.environment_id}, "
        f"wallet {sim.wallet_id}",
        f"  pay one    curl -X POST {sim.control_url}/payments/<id>/settle",
    ]
    if not settings.watcher_data_dir.is_absolute():
        lines.append(
            "  CLI        from this directory: watcher status   (a checkout: ./scripts/run status)"
        )
    lines.append(f"  CLI        anywhere: WATCHER_DATA_DIR={data_dir} watcher status")
    if stack.redis_url is not None:
        shown = mask_redis_url(stack.redis_url)
        lines.append(f"  Redis      {shown}  (password in {Path(data_dir) / PASSWORD_FILE})")
    return "\n".join([*lines, rule])


def _signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return None
