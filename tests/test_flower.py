"""Flower, started the way operators start it, sees the worker pool and demands a password."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import requests

from tests.conftest import Stack
from tests.support import wait_until
from watcher.engine.watching import create_and_watch
from watcher.redis_server import free_port

pytestmark = pytest.mark.timeout(120)
AUTH = ("operator", "flower-password-123")


def test_flower_finds_the_worker_behind_basic_auth(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(WATCHER_FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    stack.start_worker("flowerseen")
    port = free_port()
    log = (stack.tmp / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "watcher", "flower", "--port", str(port)],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def workers() -> dict[str, object] | None:
            try:
                answer = requests.get(f"{url}/api/workers", auth=AUTH, timeout=5)
            except requests.ConnectionError:
                return None
            if answer.status_code != 200:
                return None
            found = {k: v for k, v in answer.json().items() if k.startswith("flowerseen@")}
            return found or None

        found = wait_until(workers, timeout=60, interval=0.5, message="Flower to list the worker")
        assert len(found) == 1

        # Task arguments that could identify payments are shown as a count, not as ids.
        stack.start_beat()
        payment_id = create_and_watch(stack.runtime, amount_msats=1_000).record.id

        def poll_tasks() -> list[dict[str, object]] | None:
            answer = requests.get(f"{url}/api/tasks", auth=AUTH, timeout=5).json()
            polls = [t for t in answer.values() if t.get("name") == "watcher.poll_payments"]
            return polls or None

        polls = wait_until(poll_tasks, timeout=30, interval=0.5, message="a poll task in Flower")
        shown = str(polls[0].get("args"))
        assert "payment ids]" in shown
        assert payment_id not in str(polls)
        assert requests.get(f"{url}/api/workers", timeout=5).status_code == 401
        assert (
            requests.get(f"{url}/", auth=("operator", "wrong-password"), timeout=5).status_code
            == 401
        )
    finally:
        flower.terminate()
        flower.wait(15)
        log.close()


def test_flower_refuses_to_start_without_a_password(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    result = subprocess.run(
        [sys.executable, "-m", "watcher", "flower", "--port", str(free_port())],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "WATCHER_FLOWER_BASIC_AUTH" in result.stderr
