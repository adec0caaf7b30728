"""Helpers for tests that run real processes: waiting with deadlines, the test stack's settings,
Celery subprocesses (watcher.launcher's, with the tests' flags)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from watcher import launcher
from watcher.launcher import Process, celery_command

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
    return launcher.clean_env(os.environ, **overrides)


class CeleryProcess(Process):
    """`celery -A watcher <command>` as a child process with its own log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(command[0], celery_command(*command), env, log_path)
        self.command = command

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker says it consumes: a message with a short `expires` (a dispatcher
        tick) sent before that could expire unread on a slow machine."""
        self.wait_for_log(" ready.", timeout)


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


def check_event_body(body: bytes) -> None:
    """A webhook body the watcher sent validates against its type's published JSON Schema
    (GET /v1/event-types), checked by jsonschema, not by the models that made the schema."""
    import json

    import jsonschema

    from watcher.delivery.event_catalog import EVENT_MODELS, schema_of

    try:
        event = json.loads(body)
    except ValueError:
        return  # not from the watcher: some tests POST to a receiver themselves
    if not isinstance(event, dict) or "type" not in event:
        return
    assert event["type"] in EVENT_MODELS, f"an event type missing from the catalog: {event}"
    jsonschema.validate(event, schema_of(event["type"]))
