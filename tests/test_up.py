"""`watcher up` on one machine: embedded Redis with AOF, a restart loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.conftest import SIM_KEY, SimControl
from tests.receiver import Receiver
from tests.support import clean_env, wait_until
from watcher.redis_server import free_port
from watcher.simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(240)
TOKEN = "token-for-up-tests-0123456789"


class Up:
    def __init__(self, data_dir: Path, simulator: SimulatorServer) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(
            WATCHER_DATA_DIR=str(data_dir),
            WATCHER_API_TOKENS=TOKEN,
            WATCHER_WEBHOOK_ALLOW_PRIVATE="true",
            WATCHER_DISPATCH_INTERVAL="0.3",
            WATCHER_LOG_FORMAT="json",
            VOLTAGE_API_URL=simulator.base_url,
            VOLTAGE_API_KEY=SIM_KEY,
            VOLTAGE_ORGANIZATION_ID="org-up",
            VOLTAGE_ENVIRONMENT_ID="env-up",
            VOLTAGE_WALLET_ID="wallet-up",
        )
        self.log = data_dir.parent / "up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "watcher",
                    "up",
                    "--port",
                    str(self.port),
                    "--flower-port",
                    "0",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            try:
                return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(ready, timeout=60, interval=0.2, message="watcher up to be ready")

    def stop(self) -> int:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(60)
        self.process = None
        return code

    def call(self, method: str, path: str, body: object = None) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}{path}",
            json=body,
            timeout=20,
            headers={"authorization": f"Bearer {TOKEN}"},
        )


@pytest.fixture
def up(tmp_path: Path, simulator: SimulatorServer) -> Iterator[Up]:
    runner = Up(tmp_path / "data", simulator)
    yield runner
    if runner.process is not None and runner.process.poll() is None:
        os.killpg(runner.process.pid, signal.SIGKILL)
        runner.process.wait(10)


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
