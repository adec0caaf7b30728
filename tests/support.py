"""Helpers for tests that run real processes: waiting with deadlines, Celery subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | bool | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | bool | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


# The settings every test stack shares: fast ticks and sweeps, short leases, the simulator.
TEST_STACK_DEFAULTS = {
    "VOLTAGE_ORGANIZATION_ID": "org-test",
    "VOLTAGE_ENVIRONMENT_ID": "env-test",
    "VOLTAGE_WALLET_ID": "wallet-test",
    "WATCHER_LOG_FORMAT": "json",
    "WATCHER_DISPATCH_INTERVAL": "0.2",
    "WATCHER_SWEEP_INTERVAL": "1",
    "WATCHER_CLAIM_LEASE": "3",
    "WATCHER_POLL_SCHEDULE": "10:0.5,60:2,3600:10",
    "WATCHER_GENERATING_POLL_INTERVAL": "0.2",
    "WATCHER_POLL_RETRY_BUDGET": "0.5",
    "VOLTAGE_RETRY_BUDGET": "3",
}


def stack_values(
    *, redis_url: str, voltage_url: str, api_key: str, data_dir: Path, **overrides: str
) -> dict[str, str]:
    """Environment (by variable name) of a test stack on that Redis and simulator."""
    return {
        "WATCHER_REDIS_URL": redis_url,
        "WATCHER_DATA_DIR": str(data_dir),
        "VOLTAGE_API_URL": voltage_url,
        "VOLTAGE_API_KEY": api_key,
        **TEST_STACK_DEFAULTS,
        **overrides,
    }


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without any WATCHER_/VOLTAGE_ variable, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "VOLTAGE_"))}
    env.update(overrides)
    return env


class CeleryProcess:
    """`celery -A watcher <command>` as a child process with its own log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "watcher", *self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker says it consumes: a message with a short `expires` (a dispatcher
        tick) sent before that could expire unread on a slow machine."""
        wait_until(
            lambda: " ready." in self.log_text() or not self.alive,
            timeout=timeout,
            interval=0.1,
            message=f"{' '.join(self.command[:1])} to be ready",
        )
        if not self.alive:
            raise AssertionError(f"celery exited early:\n{self.log_text()[-2000:]}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean shutdown, no acks, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_command(name: str, concurrency: int = 4) -> list[str]:
    return [
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
        "-n",
        f"{name}@%h",
    ]


def beat_command(schedule_file: Path) -> list[str]:
    return ["beat", "--loglevel", "INFO", "-s", str(schedule_file)]
