"""Issue 13: a newcomer's `watcher up --simulate` in one terminal and the CLI in another.

Reproduces what a fresh user met: every command failed with "WATCHER_REDIS_URL is not set"
(the embedded Redis takes a new port on each start), a payment pending across a restart was
forgotten by the simulator, and an idle stack wrote hundreds of log lines a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import clean_env, wait_until
from tests.test_up import Up

pytestmark = pytest.mark.timeout(300)
IDLE_WINDOW = 60.0  # seconds: the budget is per minute
IDLE_BUDGET = 10  # log lines in that minute


class Terminal(Up):
    """`watcher up --simulate` started from a directory, as `./scripts/run up --simulate` is:
    no variable set at all, so the data directory is ./data."""

    def __init__(self, cwd: Path) -> None:
        super().__init__(cwd / "data", None)
        self.cwd = cwd
        self.env = clean_env()  # Up's own variables are exactly what this test must not set
        self.log = cwd / "up.log"

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "watcher", "up", *self.args],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def lines(self) -> list[str]:
        return self.output().splitlines()


def run_watcher(
    cwd: Path, env: dict[str, str], *argv: str, module: str = "watcher"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *(["-m", module] if module else []), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def other_terminal(
    cwd: Path, *args: str, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """A `watcher` command with nothing exported but (optionally) WATCHER_DATA_DIR."""
    env = clean_env(**({"WATCHER_DATA_DIR": str(data_dir)} if data_dir else {}))
    return run_watcher(cwd, env, *args)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    (tmp_path / "project").mkdir()
    up = Terminal(tmp_path / "project")
    yield up
    up.kill_all()


def test_the_cli_finds_up_then_idle_is_quiet_and_a_restart_loses_nothing(
    terminal: Terminal, tmp_path: Path
) -> None:
    terminal.start()
    data_dir = terminal.cwd / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stack_file = data_dir / "stack.json"
    assert stack_file.stat().st_mode & 0o077 == 0

    # Another terminal, somewhere else, with only WATCHER_DATA_DIR; then from the same directory
    # with nothing at all.
    status = other_terminal(elsewhere, "status", data_dir=data_dir)
    assert status.returncode == 0, status.stderr
    assert "0 pending" in status.stdout
    subs = other_terminal(elsewhere, "subscriptions", "list", data_dir=data_dir)
    assert subs.returncode == 0, subs.stderr
    created = other_terminal(
        terminal.cwd, "create", "--amount-msats", "1000", "--description", "x", "--json"
    )
    assert created.returncode == 0, created.stderr
    payment_id = json.loads(created.stdout)["id"]
    shown = other_terminal(terminal.cwd, "status", payment_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] in ("generating", "receiving")

    # Idle with a payment pending: sweeps every second, nothing to say.
    wait_until(
        lambda: "receiving" in other_terminal(terminal.cwd, "status", payment_id).stdout,
        timeout=30,
        message="the payment to be receiving",
    )
    before = len(terminal.lines())
    deadline = time.monotonic() + IDLE_WINDOW
    while time.monotonic() < deadline:  # a measuring window, failing as soon as it is over
        written = terminal.lines()[before:]
        assert len(written) <= IDLE_BUDGET, "\n".join(written)
        time.sleep(1)
    written = terminal.lines()[before:]
    assert len(written) <= IDLE_BUDGET, "\n".join(written)

    # Stop: the stack file goes, and the CLI says nothing runs. Restart, then pay the payment
    # created before the restart: the simulator kept it, the watcher still watches it.
    assert terminal.stop() == 0
    assert not stack_file.exists()
    gone = other_terminal(terminal.cwd, "status")
    assert gone.returncode == 2
    assert "no `watcher up` is running" in gone.stderr
    terminal.start()
    stack = json.loads(stack_file.read_text())
    control = stack["simulator"]["api_url"].removesuffix("/v1") + "/_sim"

    def simulator_has_it() -> bool:
        """/readyz is the API's; the simulator may still be starting."""
        try:
            return requests.get(f"{control}/payments/{payment_id}", timeout=2).ok
        except requests.ConnectionError:
            return False

    wait_until(simulator_has_it, timeout=30, interval=0.2, message="the restarted simulator")
    settled = requests.post(f"{control}/payments/{payment_id}/settle", timeout=10)
    assert settled.status_code == 200, settled.text

    def completed() -> list[dict[str, Any]]:
        listed = other_terminal(terminal.cwd, "events", "--payment", payment_id, "--json")
        assert listed.returncode == 0, listed.stderr
        return [e for e in json.loads(listed.stdout) if e["type"] == "payment.completed"]

    (event,) = wait_until(completed, timeout=60, interval=0.5, message="payment.completed")
    assert event["payment_id"] == payment_id
    assert terminal.stop() == 0


def test_unknown_variables_are_named_with_the_closest_known_one(tmp_path: Path) -> None:
    """Issue 13, finding 4: WATCHER_API_TOKEN= (singular) was accepted silently."""
    (tmp_path / ".env").write_text("VOLTAGE_APIKEY=x\nWATCHER_FROBNICATE=1\n")
    env = clean_env(WATCHER_API_TOKEN="a-token-long-enough-0123")
    result = run_watcher(tmp_path, env, "config")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 3, result.stderr
    assert any(
        "WATCHER_API_TOKEN (in the environment)" in w and "WATCHER_API_TOKENS?" in w
        for w in warnings
    )
    assert any("VOLTAGE_APIKEY (in .env)" in w and "VOLTAGE_API_KEY?" in w for w in warnings)
    assert any("WATCHER_FROBNICATE" in w and "did you mean" not in w for w in warnings)
    assert "a-token-long-enough-0123" not in result.stderr


def test_a_worker_warns_about_an_unknown_variable_once_in_its_log(tmp_path: Path) -> None:
    """Processes started without the CLI (systemd's celery units) warn too, in the log."""
    env = clean_env(
        WATCHER_REDIS_URL="redis://127.0.0.1:9/0",
        WATCHER_RETENTON="3600",
        WATCHER_LOG_FORMAT="json",
    )
    code = (
        "from celery.signals import setup_logging\n"
        "import watcher.celery\n"
        "setup_logging.send(sender=None)\n"
    )
    result = run_watcher(tmp_path, env, "-c", code, module="")
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if "WATCHER_RETENTON" in x]
    assert line["level"] == "warning"
    assert line["did_you_mean"] == "WATCHER_RETENTION"
