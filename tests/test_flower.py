"""Flower, started the way operators start it, sees the worker pool and demands a password."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import requests

from tests.conftest import Stack
from tests.support import wait_until
from watcher.engine.watching import create_and_watch
from watcher.redis_server import free_port

pytestmark = pytest.mark.timeout(120)
AUTH = ("operator", "flower-password-123")


def start_flower(stack: Stack, log_name: str) -> tuple[subprocess.Popen[bytes], IO[bytes], str]:
    """`watcher flower` on a free port, logging to `log_name`; its process, log and URL."""
    port = free_port()
    log = (stack.tmp / log_name).open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "watcher", "flower", "--port", str(port)],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return flower, log, f"http://127.0.0.1:{port}"


def test_flower_finds_the_worker_behind_basic_auth(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(WATCHER_FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    stack.start_worker("flowerseen")
    flower, log, url = start_flower(stack, "flower.log")
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
        stack.runtime.payments.reschedule(payment_id, stack.runtime.clock())  # a poll due now

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


def deploy_probes() -> list[tuple[str, list[str]]]:
    """The health checks deploy/ runs against Flower (compose, Kubernetes)."""
    import yaml

    deploy = Path(__file__).parent.parent / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    found = [("compose", compose["services"]["flower"]["healthcheck"]["test"][1:])]
    for doc in yaml.safe_load_all((deploy / "k8s" / "flower.yaml").read_text()):
        if doc and doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            for probe in ("livenessProbe", "readinessProbe"):
                found.append((probe, container[probe]["exec"]["command"]))
    return found


def test_flower_metrics_and_healthcheck_demand_the_password(
    make_stack: Callable[..., Stack],
) -> None:
    """Flower leaves these two open even with basic auth; `watcher flower` closes them."""
    stack = make_stack(WATCHER_FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    flower, log, url = start_flower(stack, "flower-open-routes.log")
    try:

        def listening() -> bool:
            try:
                return requests.get(f"{url}/healthcheck", auth=AUTH, timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(listening, timeout=60, interval=0.3, message="Flower to listen")
        for path in ("/metrics", "/healthcheck", "/api/workers", "/"):
            anonymous = requests.get(f"{url}{path}", timeout=5)
            assert anonymous.status_code == 401, path
            if path in ("/metrics", "/healthcheck"):
                assert anonymous.headers["WWW-Authenticate"].startswith("Basic"), path
            wrong = requests.get(f"{url}{path}", auth=(AUTH[0], "wrong-password"), timeout=5)
            assert wrong.status_code == 401, path
        metrics = requests.get(f"{url}/metrics", auth=AUTH, timeout=5)
        assert metrics.status_code == 200
        assert "flower_" in metrics.text
        assert requests.get(f"{url}/healthcheck", auth=AUTH, timeout=5).text == "OK"
        for where, probe in deploy_probes():
            argv = [
                sys.executable,
                *(arg.replace("5555", url.rsplit(":", 1)[1]) for arg in probe[1:]),
            ]
            ran = subprocess.run(argv, env=stack.env, capture_output=True, timeout=30, check=False)
            assert ran.returncode == 0, (where, ran.stderr)
            anonymous = {k: v for k, v in stack.env.items() if k != "WATCHER_FLOWER_BASIC_AUTH"}
            refused = subprocess.run(
                argv,
                env={**anonymous, "WATCHER_FLOWER_BASIC_AUTH": "operator:wrong-password"},
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert refused.returncode != 0, where
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
