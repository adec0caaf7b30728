"""`watcher up`: every process on one machine, one log stream, until Ctrl-C.

Without WATCHER_REDIS_URL it starts an embedded redis-server that appends every write to
WATCHER_DATA_DIR/redis (AOF), so stopping and starting again loses nothing. Its password lives in
WATCHER_DATA_DIR/redis.password (0600); WATCHER_DATA_DIR/watcher.lock keeps a second instance
off the same data.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watcher.launcher import celery_command, stop_all, watcher_command
from watcher.logging import get_logger, register_secrets
from watcher.preflight import DataDirLock, check_port_free
from watcher.redis_server import (
    RedisServer,
    RedisServerError,
    free_port,
    load_or_create_password,
    make_private,
)
from watcher.redis_url_passwords import mask_redis_url
from watcher.restarts import Child, EmbeddedRedis, Supervised, signal_name
from watcher.settings import Settings
from watcher.stack import SimulatedVoltage, Stack, remove_stack, write_stack
from watcher.unknown_settings import REPORTED_MARK

log = get_logger(__name__)

SIMULATOR_KEY = "sim-key"
PASSWORD_FILE = "redis.password"  # noqa: S105 - a file name, not a password
SIMULATOR_STATE_FILE = "simulator.jsonl"
WATCH_INTERVAL = 0.25


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
        data_dir, lock_fd = self._claim_data_dir()
        if not self.settings.watcher_redis_url:
            self._start_embedded_redis(data_dir, lock_fd)
        if self.options.simulate:
            self.children.append(self._simulator(data_dir))
        else:
            self.settings.require_voltage()
        self.children += self._services(data_dir)
        # All of them known to stop() before any starts: a failure mid-way orphans none.
        for child in self.children:
            child.start(self.env)
            child.backoff.launched(time.monotonic(), restart=False)
        self._announce(data_dir)

    def _claim_data_dir(self) -> tuple[Path, int]:
        """The data dir locked to us (the lock's descriptor), every port checked, its files
        private: all before anything starts."""
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
        return data_dir, lock_fd

    def _services(self, data_dir: Path) -> list[Child]:
        """The worker, beat, the API and Flower; `--quiet`: no Celery ASCII banner ("watcher
        is up" says what runs)."""
        options = self.options
        concurrency = (
            ["--concurrency", str(options.worker_concurrency)] if options.worker_concurrency else []
        )
        schedule = str(data_dir / "celerybeat-schedule")
        children = [
            Child(
                "worker", celery_command("worker", "--loglevel", "INFO", *concurrency, quiet=True)
            ),
            Child("beat", celery_command("beat", "--loglevel", "INFO", "-s", schedule, quiet=True)),
            Child(
                "api",
                watcher_command("api", "--host", options.api_host, "--port", str(options.api_port)),
            ),
        ]
        if options.flower_port:
            flower = watcher_command("flower", "--port", str(options.flower_port))
            children.append(Child("flower", flower))
        return children

    def _announce(self, data_dir: Path) -> None:
        """The stack file other commands find us by, the banner, and "watcher is up"."""
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

    def _simulator(self, data_dir: Path) -> Child:
        """The simulator child, and the VOLTAGE_ settings that point every other one at it."""
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
        command = watcher_command("simulator", "--port", str(port), "--api-key", SIMULATOR_KEY)
        # The simulated payments outlive a restart, as the watcher's records do.
        state_file = str(data_dir / SIMULATOR_STATE_FILE)
        return Child("simulator", [*command, "--state-file", state_file])

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
            fields = {"process": proc.name, "exit_code": code, "signal": signal_name(code)}
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
        stop_all(self.children, timeout)
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
