"""Session-wide real services: a private redis-server on a free port, the Voltage simulator,
and the watcher stack (its settings, Celery worker and beat) a test starts as it needs."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.support import (
    CeleryProcess,
    beat_command,
    check_event_body,
    clean_env,
    stack_values,
    worker_command,
)
from watcher.launcher import stop_all
from watcher.receiver import Receiver
from watcher.redis_server import RedisServer
from watcher.runtime import Runtime
from watcher.settings import Settings, load_settings
from watcher.simulator import SimulatorConfig
from watcher.simulator.server import SimulatorServer

STACK_DATABASES = 1024


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Our own redis-server for the whole session; never touches the machine's Redis."""
    data_dir: Path = tmp_path_factory.mktemp("redis")
    # One database per stack: reusing a database a previous stack's broker used is what made
    # later tests order-dependent, so there are enough that the session never wraps.
    server = RedisServer(data_dir, extra_args=["--databases", str(STACK_DATABASES)]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on a clean database: flushing is safe because the server is ours alone."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


# --- the watcher stack: simulator + real Celery worker and beat ------------------------------

SIM_KEY = "sim-key-for-tests-0123456789"
ALL_PERMISSIONS = frozenset({"read", "receive", "write"})


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    """One Voltage simulator for the session; tests use fresh payment ids, never reset it."""
    config = SimulatorConfig(
        api_keys={SIM_KEY: ALL_PERMISSIONS}, not_found_window=0.2, generating_delay=0.1
    )
    with SimulatorServer(config) as sim:
        yield sim


class SimControl:
    """The simulator's control surface, for tests."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.url = sim.control_url
        self.http = requests.Session()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def settle(self, payment_id: str) -> Any:
        return self.call("POST", f"/payments/{payment_id}/settle")

    def fail(self, payment_id: str, code: str = "no_route") -> Any:
        return self.call("POST", f"/payments/{payment_id}/fail", {"code": code})

    def expire(self, payment_id: str) -> Any:
        return self.call("POST", f"/payments/{payment_id}/expire")

    def fault(self, **rule: Any) -> str:
        return str(self.call("POST", "/faults", rule)["id"])

    def clear_faults(self) -> None:
        self.call("DELETE", "/faults")

    def stats(self) -> Any:
        return self.call("GET", "/stats")


@pytest.fixture(scope="session")
def sim_control(simulator: SimulatorServer) -> SimControl:
    return SimControl(simulator)


_databases = itertools.count(1)


@dataclass
class Stack:
    """A watcher deployment in miniature: its own Redis database, settings and processes."""

    env: dict[str, str]
    settings: Settings
    runtime: Runtime
    tmp: Path
    processes: list[CeleryProcess] = field(default_factory=list)

    def start_worker(self, name: str = "w1", concurrency: int = 4) -> CeleryProcess:
        proc = CeleryProcess(
            worker_command(name, concurrency),
            self.env,
            self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.log",
        ).start()
        self.processes.append(proc)
        proc.wait_ready()
        return proc

    def start_beat(self) -> CeleryProcess:
        proc = CeleryProcess(
            beat_command(self.tmp / f"beat-{uuid.uuid4().hex[:6]}"), self.env, self.tmp / "beat.log"
        ).start()
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        stop_all(self.processes, timeout=15.0)
        self.runtime.redis.close()


@pytest.fixture
def make_stack(
    redis_server: RedisServer, simulator: SimulatorServer, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    """Build a stack with settings overrides (env names); processes are started by the test."""
    stacks: list[Stack] = []

    def build(**overrides: str) -> Stack:
        db = next(_databases) % STACK_DATABASES or 1
        url = f"redis://127.0.0.1:{redis_server.port}/{db}"
        redis.Redis.from_url(url).flushdb()
        values = stack_values(
            redis_url=url,
            voltage_url=simulator.base_url,
            api_key=SIM_KEY,
            data_dir=tmp_path / "data",
            **overrides,
        )
        env = clean_env(**values)
        (tmp_path / "data").mkdir(exist_ok=True)
        settings = load_settings(**{k.lower(): v for k, v in values.items()})
        stack = Stack(env, settings, Runtime.from_settings(settings), tmp_path)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    """Start webhook receivers on loopback as a test needs them; all stopped afterwards."""
    started: list[Receiver] = []

    def make() -> Receiver:
        receiver = Receiver().start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()
    for receiver in started:  # every event any test received matches its published schema
        for body in receiver.bodies():
            check_event_body(body)
