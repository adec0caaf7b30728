"""Issue 11, finding 1: at the default process layout (one prefork worker, concurrency = the
2 CPUs of the reference machine, and beat), one subscriber that holds every request for 60 s
must not stall delivery to healthy subscribers, nor the dispatcher ticks, nor detection."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import SimControl, Stack
from tests.support import CeleryProcess, wait_until
from watcher.engine.watching import create_and_watch
from watcher.receiver import Answer, Receiver

pytestmark = pytest.mark.timeout(240)

# Production defaults for what matters here (the test stack's fast ticks undone).
PRODUCTION = {
    "WATCHER_DISPATCH_INTERVAL": "1",
    "WATCHER_SWEEP_INTERVAL": "2",
    "WATCHER_CLAIM_LEASE": "30",
    "WATCHER_POLL_SCHEDULE": "60:1,600:5,3600:30,86400:120",
    "WATCHER_GENERATING_POLL_INTERVAL": "0.5",
    "WATCHER_POLL_RETRY_BUDGET": "2",
}
# What a healthy receiver may wait, at most, in this test: far above what the watcher needs
# (a few seconds) and far below what head-of-line blocking behind a 60 s hang costs (minutes).
HEALTHY_DEADLINE = 30.0


def default_layout(stack: Stack) -> None:
    """The Procfile's worker and beat, as a 2-CPU machine runs them (no pool options)."""
    for name, command in (
        ("worker", ["worker", "--concurrency", "2", "--loglevel", "INFO", "-n", "default@%h"]),
        ("beat", ["beat", "--loglevel", "INFO", "-s", str(stack.tmp / "beat-schedule")]),
    ):
        proc = CeleryProcess(command, stack.env, stack.tmp / f"{name}.log").start()
        stack.processes.append(proc)
        if name == "worker":
            proc.wait_ready()


def test_a_hanging_subscriber_stalls_neither_healthy_ones_nor_detection(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = make_stack(WATCHER_WEBHOOK_ALLOW_PRIVATE="true", **PRODUCTION)
    rt = stack.runtime
    hanging, healthy = receivers(), [receivers(), receivers()]
    hanging.default = Answer(status=204, body=b"", delay=60)
    for receiver in healthy:
        receiver.default = Answer(status=204, body=b"")
    rt.subscriptions.create(url=hanging.url())
    secrets = [rt.subscriptions.create(url=r.url())[1] for r in healthy]
    default_layout(stack)
    ids = [create_and_watch(rt, amount_msats=1_000 + i).record.id for i in range(17)]
    settled_at: dict[str, float] = {}

    def settle(batch: list[str]) -> None:
        for payment_id in batch:
            sim_control.settle(payment_id)
            settled_at[payment_id] = time.time()

    def healthy_hold(count: int) -> bool:
        return all(len(r.received) >= count for r in healthy)

    # The waves of the report: 8, 4 more 4 s later, then 5 one every 3 s. Pacing the load is
    # the workload itself, not a wait for a condition.
    started = time.monotonic()
    paced = threading.Event()
    ticks = rt.payments.counters().get("dispatch_ticks", 0)
    for offset, batch in (
        (0, ids[:8]),
        (4, ids[8:12]),
        *((7 + 3 * i, [p]) for i, p in enumerate(ids[12:])),
    ):
        paced.wait(max(0.0, started + offset - time.monotonic()))
        settle(batch)
    wait_until(
        lambda: healthy_hold(17),
        timeout=HEALTHY_DEADLINE,
        message="every payment at both healthy subscribers",
    )

    assert len(hanging.received) >= 1, "the hanging subscriber was attempted meanwhile"
    assert rt.payments.counters()["dispatch_ticks"] > ticks, "ticks went on while it hung"
    for receiver, secret in zip(healthy, secrets, strict=True):
        got = [json.loads(r.body)["data"].get("payment_id") for r in receiver.received]
        assert sorted(got) == sorted(ids), "each payment exactly once"
        for request in receiver.received:
            Webhook(secret).verify(request.body, request.headers)
    # Detection went on too: every payment is final in the watcher's own records.
    assert all(rt.payments.get(payment_id).status == "completed" for payment_id in ids)
