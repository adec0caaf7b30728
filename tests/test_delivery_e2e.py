"""End to end with real processes: simulator settles -> worker detects -> subscribers on
loopback receive signed webhooks that the official standardwebhooks library verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from watcher.delivery.store import DEAD, SUCCEEDED
from watcher.engine.watching import create_and_watch
from watcher.receiver import Answer, Receiver
from watcher.redis_server import free_port

pytestmark = pytest.mark.timeout(180)

FAST_RETRIES = "0,0.5,0.5"


def running_stack(make_stack: Callable[..., Stack], **overrides: str) -> Stack:
    stack = make_stack(
        WATCHER_WEBHOOK_ALLOW_PRIVATE="true",
        WATCHER_WEBHOOK_RETRY_SCHEDULE=FAST_RETRIES,
        WATCHER_WEBHOOK_CONNECT_TIMEOUT="1",
        WATCHER_WEBHOOK_TIMEOUT="2",
        WATCHER_DELIVERY_LEASE="5",
        **overrides,
    )
    stack.start_worker(concurrency=6)
    stack.start_beat()
    return stack


def deliveries_of(stack: Stack, subscription_id: str) -> list[Any]:
    store = stack.runtime.deliveries
    found = [
        store.get(d, with_attempts=True) for d in store.list_ids(subscription_id=subscription_id)
    ]
    return [d for d in found if d is not None]


def test_settled_payment_reaches_two_subscribers_once_each_with_one_webhook_id(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = running_stack(make_stack)
    rt = stack.runtime
    first, second = receivers(), receivers()
    sub1, secret1 = rt.subscriptions.create(url=first.url())
    sub2, secret2 = rt.subscriptions.create(url=second.url())
    payment = create_and_watch(rt, amount_msats=42_000, description="two subscribers")
    sim_control.settle(payment.record.id)

    wait_until(lambda: first.received and second.received, timeout=30, message="both webhooks")
    for receiver, secret in ((first, secret1), (second, secret2)):
        (got,) = receiver.received
        body = Webhook(secret).verify(got.body, got.headers)
        assert body["type"] == "payment.completed"
        assert body["data"]["payment"]["id"] == payment.record.id
        assert body["data"]["payment"]["status"] == "completed"
        assert body["data"]["payment"]["data"]["payment_request"] == payment.record.payment_request
    assert first.received[0].headers["webhook-id"] == second.received[0].headers["webhook-id"]
    assert first.received[0].body == second.received[0].body
    wait_until(
        lambda: all(
            d.status == SUCCEEDED for s in (sub1, sub2) for d in deliveries_of(stack, s.id)
        ),
        message="deliveries marked succeeded",
    )
    # More ticks pass: nobody gets it twice.
    ticks = rt.payments.counters()["dispatch_ticks"]
    wait_until(lambda: rt.payments.counters()["dispatch_ticks"] >= ticks + 5, message="more ticks")
    assert len(first.received) == 1
    assert len(second.received) == 1


def test_signatures_verify_before_and_during_rotation_and_tampering_fails(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = running_stack(make_stack)
    rt = stack.runtime
    receiver = receivers()
    sub, old_secret = rt.subscriptions.create(url=receiver.url())
    before = create_and_watch(rt, amount_msats=1_000)
    sim_control.settle(before.record.id)
    wait_until(lambda: len(receiver.received) == 1, timeout=30, message="first webhook")
    _, new_secret = rt.subscriptions.rotate_secret(sub.id, overlap=3600)
    during = create_and_watch(rt, amount_msats=2_000)
    sim_control.settle(during.record.id)
    wait_until(lambda: len(receiver.received) == 2, timeout=30, message="second webhook")

    early, late = receiver.received
    Webhook(old_secret).verify(early.body, early.headers)
    assert len(late.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(late.body, late.headers)  # receivers not yet switched
    Webhook(new_secret).verify(late.body, late.headers)  # receivers already switched
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret).verify(late.body.replace(b"completed", b"c0mpleted"), late.headers)
    stale = {**late.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret).verify(late.body, stale)


def test_retries_until_success_and_dead_letter_then_redeliver(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = running_stack(make_stack)
    rt = stack.runtime
    flaky, broken = receivers(), receivers()
    flaky.answer(500, 500)
    broken.default = Answer(status=503, body=b"down for maintenance")
    flaky_sub, secret = rt.subscriptions.create(url=flaky.url())
    broken_sub, _ = rt.subscriptions.create(url=broken.url())
    payment = create_and_watch(rt, amount_msats=3_000)
    sim_control.settle(payment.record.id)

    def finished(sub_id: str, status: str) -> Any:
        found = deliveries_of(stack, sub_id)
        return found[0] if found and found[0].status == status else None

    ok = wait_until(lambda: finished(flaky_sub.id, SUCCEEDED), timeout=30, message="3rd attempt")
    assert [a["status_code"] for a in ok.attempt_log] == [500, 500, 200]
    assert all(a["latency_ms"] > 0 for a in ok.attempt_log)
    Webhook(secret).verify(flaky.received[-1].body, flaky.received[-1].headers)
    assert len({r.headers["webhook-id"] for r in flaky.received}) == 1

    dead = wait_until(lambda: finished(broken_sub.id, DEAD), timeout=30, message="dead letter")
    assert [a["status_code"] for a in dead.attempt_log] == [503, 503, 503]
    assert dead.attempt_log[0]["response_body"] == "down for maintenance"
    broken.default = Answer(status=200)
    rt.deliveries.redeliver(dead.id, time.time())
    wait_until(lambda: finished(broken_sub.id, SUCCEEDED), timeout=30, message="redelivery")
    assert len({r.headers["webhook-id"] for r in broken.received}) == 1


def test_hanging_and_refusing_subscribers_do_not_delay_a_healthy_one(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = running_stack(make_stack, WATCHER_WEBHOOK_MAX_IN_FLIGHT="1")
    rt = stack.runtime
    healthy, hanging = receivers(), receivers()
    hanging.default = Answer(status=200, delay=30)
    rt.subscriptions.create(url=hanging.url())
    rt.subscriptions.create(url=f"http://127.0.0.1:{free_port()}/nobody-listens")
    rt.subscriptions.create(url=healthy.url())
    ids = [create_and_watch(rt, amount_msats=1_000 + i).record.id for i in range(4)]
    settled_at = {}
    for payment_id in ids:
        sim_control.settle(payment_id)
        settled_at[payment_id] = time.time()
    wait_until(lambda: len(healthy.received) == 4, timeout=30, message="healthy gets all four")
    delays = []
    for got in healthy.received:
        payment_id = json.loads(got.body)["data"]["payment_id"]
        delays.append(got.at - settled_at[payment_id])
    # Each arrives within a few dispatcher ticks, far below the hanging peer's timeout.
    assert max(delays) < 6, delays


def test_worker_killed_mid_delivery_still_delivers(
    make_stack: Callable[..., Stack], sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    stack = make_stack(
        WATCHER_WEBHOOK_ALLOW_PRIVATE="true",
        WATCHER_WEBHOOK_RETRY_SCHEDULE=FAST_RETRIES,
        WATCHER_WEBHOOK_CONNECT_TIMEOUT="1",
        WATCHER_WEBHOOK_TIMEOUT="20",
        WATCHER_DELIVERY_LEASE="22",
    )
    rt = stack.runtime
    receiver = receivers()
    receiver.answer(Answer(status=200, delay=30))  # the first attempt hangs
    sub, secret = rt.subscriptions.create(url=receiver.url())
    doomed = stack.start_worker("doomed")
    stack.start_beat()
    payment = create_and_watch(rt, amount_msats=9_000)
    sim_control.settle(payment.record.id)
    wait_until(lambda: receiver.received, timeout=30, message="the first attempt to arrive")
    doomed.kill()  # mid-delivery: the request is open, nothing recorded, nothing acked
    assert deliveries_of(stack, sub.id)[0].attempts == 0
    stack.start_worker("rescuer")
    delivered = wait_until(
        lambda: (d := deliveries_of(stack, sub.id)) and d[0].status == SUCCEEDED and d[0],
        timeout=60,
        message="delivery after the lease ran out",
    )
    assert delivered.attempts == 1
    assert len(receiver.received) == 2
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    Webhook(secret).verify(receiver.received[-1].body, receiver.received[-1].headers)


def test_the_readme_receiver_example_verifies_and_dedupes(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    """examples/receiver.py, as the README shows it, run as its own process."""
    stack = running_stack(make_stack)
    rt = stack.runtime
    port = free_port()
    sub, secret = rt.subscriptions.create(url=f"http://127.0.0.1:{port}/hook")
    example = Path(__file__).parent.parent / "examples" / "receiver.py"
    proc = subprocess.Popen(
        [sys.executable, str(example), str(port)],
        env={**os.environ, "WEBHOOK_SECRET": secret},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        payment = create_and_watch(rt, amount_msats=5_000, metadata={"order": "A-17"})
        sim_control.settle(payment.record.id)
        delivered = wait_until(
            lambda: (d := deliveries_of(stack, sub.id)) and d[0].status == SUCCEEDED and d[0],
            timeout=30,
            message="the example receiver to accept the webhook",
        )
        assert delivered.attempt_log[-1]["status_code"] == 204
        rt.deliveries.redeliver(delivered.id, time.time())  # a duplicate: printed once only
        wait_until(
            lambda: (d := rt.deliveries.get(delivered.id)) is not None and d.attempts == 2,
            timeout=30,
            message="the re-send",
        )
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert output.splitlines() == [f"PAID {payment.record.id} {{'order': 'A-17'}}"]
