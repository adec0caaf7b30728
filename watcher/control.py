"""The control loop: dispatcher ticks, fan-out, the fast sweep and reconciliation on threads of
the beat process, not as tasks on the worker queues.

Why: as tasks they waited for a free pool slot like any poll or delivery. One hanging
subscriber filled the pool, the ticks expired unread, and detection and delivery stopped for
minutes (issue 11). On their own threads nothing can queue ahead of them. A tick only claims
and sends (a few Redis round trips); the sweep calls Voltage and may take seconds, so it has a
thread of its own and a slow Voltage never delays a tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from watcher.detection import reconcile_now, sweep_now
from watcher.logging import get_logger
from watcher.runtime import Runtime, get_runtime
from watcher.tasks import dispatch_tick

log = get_logger(__name__)


@dataclass
class Every:
    """Runs `job` every `interval` seconds on a daemon thread until stopped. A run that
    overruns skips the slots it missed instead of running back to back. Failures are logged
    once when they start and once when they end, not every second while Redis is away."""

    name: str
    interval: float
    job: Callable[[], object]
    stopping: threading.Event = field(default_factory=threading.Event)
    failures: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"watcher-{self.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.run_once()
            now = time.monotonic()
            next_at += self.interval
            if next_at < now:
                next_at = now + self.interval - (now - next_at) % self.interval
            self.stopping.wait(next_at - now)

    def run_once(self) -> None:
        try:
            self.job()
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("control job failed; retrying every interval", job=self.name)
            return
        if self.failures:
            log.info("control job recovered", job=self.name, failures=self.failures)
            self.failures = 0


class ControlLoop:
    """The tick and the sweep of one beat process (beat runs exactly once per deployment)."""

    def __init__(self, runtime: Callable[[], Runtime] = get_runtime) -> None:
        rt = runtime()
        self.jobs = [
            Every(
                "dispatch", rt.settings.watcher_dispatch_interval, lambda: dispatch_tick(runtime())
            )
        ]
        s = rt.settings
        if s.watcher_sweep_interval > 0:
            self.jobs.append(Every("sweep", s.watcher_sweep_interval, lambda: sweep_now(runtime())))
            self.jobs.append(
                Every(
                    "reconcile",
                    s.watcher_reconcile_page_interval,
                    lambda: reconcile_now(runtime()),
                )
            )

    def start(self) -> ControlLoop:
        for job in self.jobs:
            job.start()
        log.info("control loop started", jobs=[j.name for j in self.jobs])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        for job in self.jobs:
            job.stopping.set()
        for job in self.jobs:
            if job.thread is not None:
                job.thread.join(timeout)
