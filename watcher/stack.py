"""What a running `watcher up` tells the commands run beside it: where its pieces listen.

The embedded Redis takes a free port on every start and the simulator's key and ids are made up
by `watcher up --simulate`, so a `watcher status` in another terminal could not know them.
`watcher up` writes them to WATCHER_DATA_DIR/stack.json (0600: the Redis URL carries its
password) once everything has started, and removes the file when it stops; a command run with
the same data directory reads it when WATCHER_REDIS_URL is not set.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from watcher.settings import Settings, load_settings

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class SimulatedVoltage:
    """The simulator `watcher up --simulate` runs, and the credentials it accepts."""

    api_url: str
    api_key: str
    organization_id: str
    environment_id: str
    wallet_id: str

    @property
    def control_url(self) -> str:
        """Where settle/fail/expire live (`/_sim`), beside the API's `/v1`."""
        return self.api_url.removesuffix("/v1") + "/_sim"


@dataclass(frozen=True)
class Stack:
    pid: int
    api_url: str
    data_dir: str
    redis_url: str | None = None  # only an embedded one; a configured URL is in the settings
    simulator: SimulatedVoltage | None = None
    # A subscription the CLI adds must pass the check the stack's worker will apply.
    webhook_allow_private: bool = False

    def settings_overrides(self, settings: Settings) -> dict[str, Any]:
        """The settings a command needs to act on this stack, given what it was told.

        Only an unset WATCHER_REDIS_URL is filled in; with a simulator, every command talks to
        the Voltage the stack talks to, as the stack's own processes do; a stack that delivers
        to private addresses lets the CLI subscribe one.
        """
        overrides: dict[str, Any] = {}
        if settings.watcher_redis_url is None and self.redis_url is not None:
            overrides["watcher_redis_url"] = self.redis_url
        if self.webhook_allow_private and not settings.watcher_webhook_allow_private:
            overrides["watcher_webhook_allow_private"] = True
        if self.simulator is not None:
            overrides.update(
                voltage_api_url=self.simulator.api_url,
                voltage_api_key=self.simulator.api_key,
                voltage_organization_id=self.simulator.organization_id,
                voltage_environment_id=self.simulator.environment_id,
                voltage_wallet_id=self.simulator.wallet_id,
            )
        return overrides


def with_stack(settings: Settings) -> Settings:
    """`settings` with what a live stack on their data directory fills in, if there is one."""
    stack = read_stack(settings.watcher_data_dir)
    overrides = stack.settings_overrides(settings) if stack is not None else {}
    return load_settings(**overrides) if overrides else settings


def stack_path(data_dir: Path) -> Path:
    return Path(data_dir) / STACK_FILE


def write_stack(stack: Stack) -> Path:
    """Atomically, and private from the first byte (the Redis URL holds the password)."""
    path = stack_path(Path(stack.data_dir))
    temporary = path.with_name(f".{STACK_FILE}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(asdict(stack), file, indent=2)
        file.write("\n")
    temporary.replace(path)
    return path


def remove_stack(data_dir: Path, pid: int) -> None:
    """Remove the file only if it is this process's: a refused second `up` must not."""
    stack = read_stack(data_dir, require_alive=False)
    if stack is not None and stack.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            stack_path(data_dir).unlink()


def read_stack(data_dir: Path, *, require_alive: bool = True) -> Stack | None:
    """The stack running on `data_dir`, or None: no file, a damaged one, or its `up` is gone
    (SIGKILLed, so it could not remove the file)."""
    try:
        raw = json.loads(stack_path(data_dir).read_text())
        simulator = raw.get("simulator")
        stack = Stack(
            pid=int(raw["pid"]),
            api_url=str(raw["api_url"]),
            data_dir=str(raw["data_dir"]),
            redis_url=raw.get("redis_url"),
            simulator=SimulatedVoltage(**simulator) if simulator else None,
            webhook_allow_private=bool(raw.get("webhook_allow_private", False)),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if require_alive and not _alive(stack.pid):
        return None
    return stack


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours to signal
    return True
