"""The `watcher` command as a user runs it: real subprocesses, real HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

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
    assert "detection: list sweeps" in table.stdout
    assert re.search(r"^create\s+1\s*$", table.stdout, re.MULTILINE), table.stdout
    assert re.search(r"^read_back\s+[1-9]", table.stdout, re.MULTILINE), table.stdout

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
    from watcher.receiver import Receiver

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


# --- Redis unreachable or refusing: one line, the masked URL, what to try ------------------

REDIS_COMMANDS = [
    ("status",),
    ("status", "0f3d8a52-6c1e-4b7a-9d2f-3e5a7c9b1d04"),
    ("events",),
    ("create", "--amount-msats", "1000"),
    ("watch", "9b1c3f52-7f39-4c3e-8e8c-1c1d6f0e6a01"),
    ("subscriptions", "list"),
    ("subscriptions", "show", "sub_" + "0" * 24),
    ("subscriptions", "add", "https://example.com/hook"),
    ("deliveries", "list"),
    ("deliveries", "show", "dlv_" + "0" * 24),
]
WRONG_PASSWORD = "wrong-redis-password-42"
RIGHT_PASSWORD = "right-redis-password-42"


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server that demands a password (RedisServer pings without one)."""
    import redis

    from watcher.redis_server import find_redis_server

    port = free_port()
    data = tmp_path_factory.mktemp("redis-auth")
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(data), "--requirepass", RIGHT_PASSWORD]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=RIGHT_PASSWORD, socket_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout=20, message="the password-protected redis-server")
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def run_with_redis(url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        **extra,
        WATCHER_REDIS_URL=url,
        VOLTAGE_API_URL=f"http://127.0.0.1:{free_port()}/v1",  # never reached
        VOLTAGE_API_KEY=KEY,
        VOLTAGE_ORGANIZATION_ID="org-1",
        VOLTAGE_ENVIRONMENT_ID="env-1",
        VOLTAGE_WALLET_ID="wallet-1",
        WATCHER_LOG_FORMAT="json",
    )
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_about_redis(
    result: subprocess.CompletedProcess[str], masked_url: str, *hints: str
) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert "Traceback" not in line
    assert masked_url in line
    assert "WATCHER_REDIS_URL" in line
    for hint in hints:
        assert hint in line, line
    assert WRONG_PASSWORD not in result.stderr + result.stdout
    assert result.stdout == ""
    return line


@pytest.mark.parametrize("args", REDIS_COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_naming_the_masked_url(args: tuple[str, ...]) -> None:
    port = free_port()  # nothing listens there
    result = run_with_redis(f"redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/0", *args)
    assert_one_line_about_redis(
        result, f"redis://:**********@127.0.0.1:{port}/0", "running", "cannot reach"
    )


@pytest.mark.parametrize("args", REDIS_COMMANDS, ids=" ".join)
def test_wrong_redis_password_is_one_line_naming_the_masked_url(
    redis_with_password: int, args: tuple[str, ...]
) -> None:
    port = redis_with_password
    for url, masked in (
        (
            f"redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/0",
            f"redis://:**********@127.0.0.1:{port}/0",
        ),
        (f"redis://127.0.0.1:{port}/0?password={WRONG_PASSWORD}", "?password=**********"),
        (f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"),  # none given
    ):
        result = run_with_redis(url, *args)
        assert_one_line_about_redis(result, masked, "password")


def test_unreachable_sentinels_are_one_line_naming_the_master() -> None:
    ports = free_port(), free_port()
    url = f"sentinel://:{WRONG_PASSWORD}@127.0.0.1:{ports[0]};sentinel://127.0.0.1:{ports[1]}"
    result = run_with_redis(url, "status", WATCHER_REDIS_SENTINEL_MASTER="mymaster")
    line = assert_one_line_about_redis(
        result, f"sentinel://:**********@127.0.0.1:{ports[0]};sentinel://127.0.0.1:{ports[1]}"
    )
    assert "'mymaster'" in line
    assert "WATCHER_REDIS_SENTINEL_MASTER" in line


def test_redis_lost_in_the_middle_of_a_command_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The up-front ping passed; Redis went away before the command's next read."""
    import redis
    from click.testing import CliRunner

    from watcher.cli import cli
    from watcher.cli import payments as payments_cli
    from watcher.settings import get_settings

    class GoneStore:
        def pending_ids(self, _limit: int) -> list[tuple[str, float]]:
            raise redis.ConnectionError("Error 104 while reading from 127.0.0.1:6390")

    class Lost:
        payments = GoneStore()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WATCHER_REDIS_URL", f"redis://:{WRONG_PASSWORD}@127.0.0.1:6390/0")
    monkeypatch.setattr(payments_cli, "runtime_or_exit", lambda **_kw: Lost())
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["status"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "redis://:**********@127.0.0.1:6390/0" in line
    assert "Error 104" in line
    assert WRONG_PASSWORD not in line
