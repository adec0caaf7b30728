"""Start and stop the stack's child processes: the simulator, the API, Celery workers and beat.

Every child runs in a session of its own, so a Ctrl-C at the terminal reaches only the parent,
which then stops its children in order; stopping goes through the process group (SIGTERM, a
deadline, SIGKILL), so a worker's pool children go too. redis-server is started by
`watcher.redis_server.RedisServer` (port, data dir, password, AOF), not here.

Used by `watcher up` (watcher.supervisor), the demo, the tests and the fault suite::

    from watcher.launcher import (
        Process, celery_command, clean_env, stop_all, wait_ready, watcher_command,
    )

    env = clean_env(os.environ, WATCHER_REDIS_URL=redis.url)  # no stray WATCHER_/VOLTAGE_
    worker = Process(
        "worker", celery_command("worker", "--loglevel", "INFO"), env, log_path=tmp / "w.log"
    ).start()
    worker.wait_for_log(" ready.", timeout=60)  # raises LaunchError, with the log's tail
    api = Process("api", watcher_command("api", "--port", str(port)), env, cwd=tmp).start()
    wait_ready("the API", lambda: requests.get(f"{url}/readyz", timeout=1).ok, 60, [api])
    sim = Process("simulator", watcher_command("simulator", "--port", str(p), "--api-key", k), env)
    stop_all([worker, api])  # SIGTERM to all (last started first), one deadline, then SIGKILL

Without `log_path` a child writes to this process's stdout and stderr (`watcher up`: one log
stream). `start()` again after it died starts it anew with the same command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

POLL_INTERVAL = 0.1


class LaunchError(RuntimeError):
    """A child exited or did not get ready in time; the message says which (and its log)."""


def watcher_command(*args: str) -> list[str]:
    """`python -m watcher ARGS` with this interpreter (the virtualenv that runs us)."""
    return [sys.executable, "-m", "watcher", *args]


def celery_command(*args: str, quiet: bool = False) -> list[str]:
    """`python -m celery -A watcher [--quiet] ARGS`; `quiet` drops Celery's ASCII banner."""
    return [sys.executable, "-m", "celery", "-A", "watcher", *(["--quiet"] if quiet else []), *args]


def clean_env(base: Mapping[str, str], **values: str) -> dict[str, str]:
    """`base` without any WATCHER_/VOLTAGE_ variable (in any case: the settings read names
    case-insensitively), plus `values`: a child gets exactly the settings it is given."""
    env = {k: v for k, v in base.items() if not k.upper().startswith(("WATCHER_", "VOLTAGE_"))}
    env.update(values)
    return env


@dataclass(eq=False)
class Process:
    """One child process in its own session, optionally logging to a file (compared by identity:
    two runs of one command are two processes)."""

    name: str
    argv: list[str]
    env: Mapping[str, str] | None = None  # None: this process's environment
    log_path: Path | None = None  # stdout and stderr; None: this process's own
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self, env: Mapping[str, str] | None = None) -> Self:
        """Start it (again); `env` replaces the environment for this start and later ones."""
        if env is not None:
            self.env = env
        if self.log_path is None:
            self.process = self._spawn(None)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = self._spawn(log)
        return self

    def _spawn(self, log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.argv,
            env=None if self.env is None else dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=None if log is None else subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        """Running; asking reaps a dead one (no zombie)."""
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or never ran); negative: the signal that ended it."""
        return self.process.returncode if self.process is not None else None

    def signal(self, signum: int) -> None:
        """`signum` to its whole process group, if it still runs."""
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean shutdown, no acks, nothing flushed."""
        if self.alive and self.process is not None:
            self.signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, and SIGKILL if it still runs after `timeout` seconds."""
        stop_all([self], timeout)

    def log_text(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Until its log holds `text` (a worker's " ready.": it consumes now)."""
        wait_ready(
            f"{self.name} to log {text.strip()!r}", lambda: text in self.log_text(), timeout, [self]
        )


def stop_all(processes: Sequence[Process], timeout: float = 20.0) -> None:
    """SIGTERM to every one (the last started first), then wait for all against one deadline;
    SIGKILL whichever outlives it."""
    for proc in reversed(processes):
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes:
        if proc.process is None:
            continue
        try:
            proc.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.signal(signal.SIGKILL)
            proc.process.wait(5)


def first_dead(processes: Iterable[Process]) -> str | None:
    """What a person reads when a child that should run has exited, or None: all run."""
    for proc in processes:
        if not proc.alive:
            return f"the {proc.name} process exited (code {proc.exit_code})"
    return None


def wait_ready(
    what: str,
    condition: Callable[[], object],
    timeout: float,
    processes: Iterable[Process] = (),
) -> None:
    """Poll `condition()` until truthy; LaunchError after `timeout` seconds, or as soon as one
    of `processes` has exited (with its log's tail). A condition that raises counts as not yet:
    a service still starting answers with every kind of error."""
    watched = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        for proc in watched:
            if not proc.alive:
                raise LaunchError(
                    f"{proc.name} exited (code {proc.exit_code}) while waiting for {what}:\n"
                    f"{proc.tail()}"
                )
        with contextlib.suppress(Exception):
            if condition():
                return
        if time.monotonic() >= deadline:
            raise LaunchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_INTERVAL)
