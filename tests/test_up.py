"""`watcher up` on one machine: embedded Redis with AOF, a restart loses nothing; supervision
of every child (the embedded Redis too), one instance per data dir, ports checked first, and an
embedded Redis nobody else on the machine can read."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from standardwebhooks.webhooks import Webhook

from tests.conftest import SIM_KEY, SimControl
from tests.support import clean_env, wait_until
from watcher.receiver import Receiver
from watcher.redis_server import free_port
from watcher.simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(240)
TOKEN = "token-for-up-tests-0123456789"


class Up:
    """One `watcher up` process: against the session's simulator, or `--simulate`."""

    def __init__(
        self, data_dir: Path, simulator: SimulatorServer | None, *, name: str = "up"
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        voltage = (
            {}
            if simulator is None
            else {
                "VOLTAGE_API_URL": simulator.base_url,
                "VOLTAGE_API_KEY": SIM_KEY,
                "VOLTAGE_ORGANIZATION_ID": "org-up",
                "VOLTAGE_ENVIRONMENT_ID": "env-up",
                "VOLTAGE_WALLET_ID": "wallet-up",
            }
        )
        self.args = ["--port", str(self.port), "--flower-port", "0"]
        if simulator is None:
            self.args += ["--simulate", "--simulator-port", str(free_port())]
        self.env = clean_env(
            WATCHER_DATA_DIR=str(data_dir),
            WATCHER_API_TOKENS=TOKEN,
            WATCHER_WEBHOOK_ALLOW_PRIVATE="true",
            WATCHER_DISPATCH_INTERVAL="0.3",
            WATCHER_LOG_FORMAT="json",
            **voltage,
        )
        self.log = data_dir.parent / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "watcher", "up", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def start(self) -> None:
        self.spawn()
        wait_until(self.ready, timeout=60, interval=0.2, message="watcher up to be ready")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> int:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(60)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill_all(self) -> None:
        """After a failure: the supervisor, then whatever on its data dir outlived it."""
        self.kill()
        for pid in processes_on(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def call(self, method: str, path: str, body: object = None) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}{path}",
            json=body,
            timeout=20,
            headers={"authorization": f"Bearer {TOKEN}"},
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (Celery banners and other plain text skipped)."""
        found = []
        for line in self.output().splitlines():
            with_brace = line[line.find("{") :] if "{" in line else ""
            try:
                event = json.loads(with_brace)
            except ValueError:
                continue
            if isinstance(event, dict):
                found.append(event)
        return found


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def children_named(parent: int, name: str) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [
        pid
        for pid in pids
        if (s := _status(pid)).get("PPid") == str(parent)
        and s.get("Name") == name
        and not s.get("State", "").startswith("Z")
    ]


def processes_on(data_dir: Path) -> list[int]:
    """Live processes a `watcher up` on `data_dir` started: WATCHER_DATA_DIR in their
    environment, or (redis-server, whose proctitle overwrites its environment) working there."""
    data_dir = data_dir.resolve()
    wanted = f"WATCHER_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        ours = wanted in environ or cwd == data_dir or data_dir in cwd.parents
        if ours and not _status(int(entry.name)).get("State", "Z").startswith("Z"):
            found.append(int(entry.name))
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def up(tmp_path: Path, simulator: SimulatorServer) -> Iterator[Up]:
    runner = Up(tmp_path / "data", simulator)
    yield runner
    runner.kill_all()


@pytest.fixture
def up_simulated(tmp_path: Path) -> Iterator[Up]:
    runner = Up(tmp_path / "data", None)
    yield runner
    runner.kill_all()


def test_restart_keeps_watching_and_delivers(up: Up, sim_control: SimControl) -> None:
    with Receiver() as receiver:
        up.start()
        created = up.call("POST", "/v1/subscriptions", {"url": receiver.url()})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        payment = up.call("POST", "/v1/payments", {"amount_msats": 12_000, "description": "up"})
        assert payment.status_code in (201, 202), payment.text
        payment_id = payment.json()["id"]
        assert up.stop() == 0

        # Everything is down; the payment is paid meanwhile.
        sim_control.settle(payment_id)
        up.start()
        assert up.call("GET", f"/v1/payments/{payment_id}").status_code == 200
        wait_until(lambda: receiver.received, timeout=60, message="the webhook after restart")
        (got,) = receiver.received[:1]
        event = Webhook(secret).verify(got.body, got.headers)
        assert event["type"] == "payment.completed"
        assert event["data"]["payment_id"] == payment_id
        assert up.stop() == 0
    assert (up.log.parent / "data" / "redis").is_dir()


def test_a_killed_embedded_redis_is_reaped_logged_and_restarted(up_simulated: Up) -> None:
    """Issue 11, finding 2: a SIGKILLed embedded redis-server stayed a zombie, /readyz 503."""
    up = up_simulated
    up.start()
    assert up.process is not None
    created = up.call("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/hook"})
    assert created.status_code == 201, created.text
    (old,) = children_named(up.process.pid, "redis-server")

    os.kill(old, signal.SIGKILL)

    def died() -> list[dict[str, Any]]:
        return [e for e in up.events() if e.get("process") == "redis" and "exit_code" in e]

    (event, *_) = wait_until(died, timeout=30, message="the supervisor to log the dead redis")
    assert event["exit_code"] == -signal.SIGKILL
    assert event["next_delay"] > 0
    wait_until(up.ready, timeout=60, interval=0.2, message="/readyz 200 again")
    wait_until(lambda: not _status(old), timeout=10, message="the killed redis to be reaped")
    (new,) = children_named(up.process.pid, "redis-server")
    assert new != old
    # Same data dir: what was written before the kill is still there.
    got = up.call("GET", f"/v1/subscriptions/{created.json()['id']}")
    assert got.status_code == 200, got.text
    assert up.stop() == 0


def test_a_second_up_on_the_same_data_dir_is_refused(tmp_path: Path, up_simulated: Up) -> None:
    """Issue 11, finding 3: two `watcher up` appended to the same AOF files."""
    first = up_simulated
    first.start()
    assert first.process is not None
    second = Up(first.data_dir, None, name="second")
    try:
        code = second.spawn().wait(60)
    finally:
        second.kill()
    message = second.output().strip()
    assert code != 0
    assert len(message.splitlines()) == 1, message
    assert str(first.process.pid) in message
    assert str(first.data_dir.resolve()) in message
    assert first.ready()
    assert first.process.poll() is None
    assert first.stop() == 0


def test_a_busy_api_port_fails_before_anything_starts(tmp_path: Path) -> None:
    """Issue 11, finding 4: "watcher is up" was logged, then 13 s of restart loops."""
    up = Up(tmp_path / "data", None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", up.port))
        busy.listen()
        try:
            code = up.spawn().wait(30)
        finally:
            up.kill_all()
    message = up.output().strip()
    assert code != 0
    assert len(message.splitlines()) == 1, message
    assert str(up.port) in message
    assert "--port" in message
    assert "watcher is up" not in message
    assert processes_on(up.data_dir) == []


def test_the_embedded_redis_is_private(up_simulated: Up) -> None:
    """Issue 11, finding 7: no password, AOF files 0644: any local user read every whsec_."""
    up = up_simulated
    up.start()
    created = up.call("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/hook"})
    assert created.status_code == 201, created.text
    password_file = up.data_dir / "redis.password"
    password = password_file.read_text().strip()
    assert len(password) >= 32
    assert mode(password_file) == 0o600
    assert mode(up.data_dir) == 0o700
    redis_dir = up.data_dir / "redis"
    files = [p for p in redis_dir.rglob("*") if p.is_file()]
    assert any("appendonly" in p.name for p in files)
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    assert all(mode(p) == 0o700 for p in [redis_dir, *redis_dir.rglob("*")] if p.is_dir())

    (started,) = [e for e in up.events() if e.get("event") == "embedded redis started"]
    port = int(started["url"].rsplit(":", 1)[1].split("/")[0])
    anonymous = redis.Redis(port=port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("anything")
    anonymous.close()
    assert redis.Redis(port=port, password=password, socket_timeout=5).ping()

    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert password not in ps.stdout
    assert up.stop() == 0
    assert password not in up.output()
