"""The `watcher` command as a user runs it: real subprocesses, real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import bolt11
import pytest
import requests

from tests.conftest import SimControl, Stack
from tests.support import clean_env, wait_until
from watcher.redis_server import free_port

KEY = "cli-sim-key-0123456789"


@pytest.fixture(scope="module")
def simulator_process() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "simulator", "--port", str(port), "--api-key", KEY],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1).ok
        except requests.ConnectionError:
            return False

    try:
        wait_until(up, timeout=30, message="watcher simulator to listen")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulator_command_speaks_the_voltage_api(simulator_process: str) -> None:
    payments = f"{simulator_process}/organizations/org-1/environments/env-1/payments"
    payment_id = str(uuid.uuid4())
    body = {
        "id": payment_id,
        "wallet_id": "wallet-1",
        "payment_kind": "bolt11",
        "amount_msats": 150_000,
        "currency": "btc",
        "description": "Order 123",
        "expiration": 600,
    }
    created = requests.post(payments, json=body, headers={"x-api-key": KEY}, timeout=5)
    assert created.status_code == 202
    assert created.content == b""

    def receiving() -> dict[str, object] | None:
        answer = requests.get(f"{payments}/{payment_id}", headers={"x-api-key": KEY}, timeout=5)
        if answer.status_code == 200 and answer.json()["status"] == "receiving":
            return dict(answer.json())
        return None

    payment = wait_until(receiving, timeout=10, message="the invoice")
    data = payment["data"]
    assert isinstance(data, dict)
    invoice = bolt11.decode(data["payment_request"])
    assert data["payment_request"].startswith("lntbs")
    assert invoice.amount_msat == 150_000
    assert invoice.description == "Order 123"
    assert invoice.expiry == 600

    reused = requests.post(payments, json=body, headers={"x-api-key": KEY}, timeout=5)
    assert reused.status_code == 409
    assert reused.json()["error"]["type"] == "payment_exists"

    anonymous = requests.get(f"{payments}/{payment_id}", timeout=5)
    assert anonymous.status_code in (401, 403)
    assert "type" in anonymous.json()["error"]
    assert "detail" in anonymous.json()["error"]


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_watch_and_status_commands(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    stack = make_stack()
    created = run_cli(stack, "create", "--amount-msats", "2500", "--description", "cli", "--json")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["payment_request"].startswith("lntbs")
    assert record["amount_msats"] == 2500

    again = run_cli(stack, "watch", record["id"])
    assert again.returncode == 0
    assert "already watched" in again.stdout

    table = run_cli(stack, "status")
    assert table.returncode == 0
    assert record["id"] in table.stdout
    assert "1 pending" in table.stdout

    stack.start_worker()
    stack.start_beat()
    sim_control.settle(record["id"])

    def completed() -> dict[str, object] | None:
        shown = run_cli(stack, "status", record["id"])
        detail = json.loads(shown.stdout)
        return dict(detail) if detail["status"] == "completed" else None

    detail = wait_until(completed, timeout=30, interval=0.3, message="the CLI to show completed")
    listed = run_cli(stack, "events", "--payment", record["id"], "--json")
    assert listed.returncode == 0, listed.stderr
    (event,) = json.loads(listed.stdout)
    assert event["type"] == "payment.completed"
    assert event["body"]["data"]["payment_id"] == record["id"]
    assert record["id"] in run_cli(stack, "events").stdout
    assert [t["to"] for t in detail["transitions"]] == ["receiving", "completed"]  # type: ignore[union-attr]


def test_watch_of_an_unknown_payment_says_so(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    missing = run_cli(stack, "watch", str(uuid.uuid4()))
    assert missing.returncode == 1
    assert "has no payment" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_create_without_credentials_names_the_settings(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    env = {k: v for k, v in stack.env.items() if k != "VOLTAGE_WALLET_ID"}
    result = subprocess.run(
        [sys.executable, "-m", "watcher", "create", "--amount-msats", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "VOLTAGE_WALLET_ID" in result.stderr


def test_operator_commands_for_subscriptions_and_deliveries(
    make_stack: Callable[..., Stack],
) -> None:
    from tests.receiver import Receiver

    stack = make_stack(WATCHER_WEBHOOK_ALLOW_PRIVATE="true")
    with Receiver() as receiver:
        bad = run_cli(stack, "subscriptions", "add", "ftp://example.com/x")
        assert bad.returncode == 1
        assert "url:" in bad.stderr

        added = run_cli(stack, "subscriptions", "add", receiver.url(), "--json")
        assert added.returncode == 0, added.stderr
        sub = json.loads(added.stdout)
        assert sub["secret"].startswith("whsec_")

        listed = run_cli(stack, "subscriptions", "list")
        assert sub["id"] in listed.stdout
        assert sub["secret"] not in listed.stdout

        rotated = run_cli(stack, "subscriptions", "rotate", sub["id"])
        assert "whsec_" in rotated.stdout

        stack.start_worker()
        stack.start_beat()
        assert run_cli(stack, "subscriptions", "test", sub["id"]).returncode == 0
        wait_until(lambda: receiver.received, timeout=30, message="the test webhook")
        assert json.loads(receiver.received[0].body)["type"] == "webhook.test"
        assert len(receiver.received[0].headers["webhook-signature"].split()) == 2

        def one_succeeded() -> list[dict[str, object]] | None:
            rows = json.loads(run_cli(stack, "deliveries", "list", "--json").stdout)
            return rows if rows and rows[0]["status"] == "succeeded" else None

        rows = wait_until(one_succeeded, timeout=30, interval=0.3, message="delivery succeeded")
        delivery_id = str(rows[0]["id"])
        shown = json.loads(run_cli(stack, "deliveries", "show", delivery_id).stdout)
        assert shown["attempt_log"][0]["status_code"] == 200

        assert run_cli(stack, "deliveries", "redeliver", delivery_id).returncode == 0
        wait_until(lambda: len(receiver.received) == 2, timeout=30, message="the re-send")
        ids = {r.headers["webhook-id"] for r in receiver.received}
        assert len(ids) == 1

        assert "disabled" in run_cli(stack, "subscriptions", "disable", sub["id"]).stdout
        assert "enabled" in run_cli(stack, "subscriptions", "enable", sub["id"]).stdout
        assert run_cli(stack, "subscriptions", "delete", sub["id"]).returncode == 0
        gone = run_cli(stack, "subscriptions", "show", sub["id"])
        assert gone.returncode == 1
        assert "no subscription" in gone.stderr
