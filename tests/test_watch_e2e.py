"""End to end: simulator + real Redis + real Celery worker and beat + the dispatcher."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from watcher.engine.poller import poll_payment
from watcher.engine.watching import create_and_watch, watch_existing

pytestmark = pytest.mark.timeout(180)


def events_for(stack: Stack, payment_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.runtime.payments.outbox_events() if e["payment_id"] == payment_id]


def let_ticks_pass(stack: Stack, ticks: int) -> None:
    """Give a duplicate every chance to appear: wait for more dispatcher ticks to run."""

    def count() -> int:
        return stack.runtime.payments.counters().get("dispatch_ticks", 0)

    target = count() + ticks
    wait_until(lambda: count() >= target, timeout=30, message=f"{ticks} dispatcher ticks")


def wait_for_event(stack: Stack, payment_id: str, timeout: float = 30) -> dict[str, Any]:
    events = wait_until(
        lambda: events_for(stack, payment_id), timeout=timeout, message=f"event of {payment_id}"
    )
    return events[0]


@pytest.fixture
def running(make_stack: Callable[..., Stack]) -> Stack:
    stack = make_stack(WATCHER_MAX_WATCH_AGE="12")
    stack.start_worker()
    stack.start_beat()
    return stack


def test_settled_failed_and_expired_payments_each_yield_one_event(
    running: Stack, sim_control: SimControl
) -> None:
    rt = running.runtime
    paid = create_and_watch(rt, amount_msats=21_000, description="paid", metadata={"o": "1"})
    failed = create_and_watch(rt, amount_msats=1_000, description="fails")
    expiring = create_and_watch(rt, amount_msats=5_000, description="expires", expiration=2)
    assert paid.invoice_ready
    assert paid.record.payment_request
    assert paid.record.payment_request.startswith("lntbs")

    sim_control.settle(paid.record.id)
    sim_control.fail(failed.record.id)

    completed = wait_for_event(running, paid.record.id)
    body = json.loads(completed["body"])
    assert body["type"] == "payment.completed"
    assert body["data"]["previous_status"] == "receiving"
    assert body["data"]["payment"]["id"] == paid.record.id
    assert body["data"]["payment"]["status"] == "completed"
    assert body["data"]["payment"]["metadata"] == {"o": "1"}
    assert json.loads(wait_for_event(running, failed.record.id)["body"])["type"] == (
        "payment.failed"
    )
    # Nobody touches the third: Voltage expires it on its own and the watcher notices.
    assert json.loads(wait_for_event(running, expiring.record.id)["body"])["type"] == (
        "payment.expired"
    )

    # Let more dispatcher ticks pass: still exactly one event each.
    let_ticks_pass(running, 5)
    for result in (paid, failed, expiring):
        assert len(events_for(running, result.record.id)) == 1
        record = rt.payments.get(result.record.id)
        assert record is not None
        assert record.is_final
        assert rt.payments.next_poll_at(result.record.id) is None


def test_with_sweeps_off_a_pending_payment_is_polled_adaptively_then_stopped(
    make_stack: Callable[..., Stack],
) -> None:
    """WATCHER_SWEEP_INTERVAL=0: the fallback schedule polls every payment, young ones often."""
    stack = make_stack(WATCHER_MAX_WATCH_AGE="12", WATCHER_SWEEP_INTERVAL="0")
    stack.start_worker()
    stack.start_beat()
    rt = stack.runtime
    result = create_and_watch(rt, amount_msats=1_000, description="never paid")
    payment_id = result.record.id

    def gap() -> float | None:
        record = rt.payments.get(payment_id)
        next_at = rt.payments.next_poll_at(payment_id)
        if record is None or record.last_poll_at is None or next_at is None:
            return None
        return next_at - record.last_poll_at

    young = wait_until(gap, message="a first poll")
    assert young < 1.0
    # Past 10 s of age the schedule moves from 0.5 s to 2 s between polls ...
    older = wait_until(lambda: (g := gap()) is not None and g > 1.5 and g, timeout=20)
    assert older > 1.5
    # ... and past WATCHER_MAX_WATCH_AGE (12 s) the watch stops, saying why.
    record = wait_until(
        lambda: (r := rt.payments.get(payment_id)) is not None and r.stopped_reason and r,
        timeout=20,
        message="hard limit",
    )
    assert record.stopped_reason == "hard_limit"
    assert record.poll_count >= 10
    assert rt.payments.counters().get("stopped:hard_limit") == 1
    assert rt.payments.counters().get("voltage_requests:fallback_poll", 0) >= 10
    assert events_for(stack, payment_id) == []


def test_with_healthy_sweeps_a_pending_payment_is_not_polled_and_still_stops(
    running: Stack,
) -> None:
    rt = running.runtime
    payment_id = create_and_watch(rt, amount_msats=1_000, description="never paid").record.id
    record = wait_until(
        lambda: (r := rt.payments.get(payment_id)) is not None and r.stopped_reason and r,
        timeout=30,
        message="the watch to stop at WATCHER_MAX_WATCH_AGE",
    )
    assert record.stopped_reason == "hard_limit"
    assert record.poll_count == 1, "one read, when the watch reached its age limit"
    counters = rt.payments.counters()
    assert counters.get("voltage_requests:fallback_poll", 0) == 0
    assert counters.get("sweeps", 0) >= 5


def test_watching_an_existing_payment(running: Stack, sim_control: SimControl) -> None:
    rt = running.runtime
    payment_id = rt.voltage.submit_receive(wallet_id="wallet-test", amount_msats=3_000)
    rt.voltage.wait_for_invoice(payment_id, timeout=10)
    first = watch_existing(rt, payment_id)
    again = watch_existing(rt, payment_id)
    assert first.created
    assert not again.created
    sim_control.settle(payment_id)
    assert json.loads(wait_for_event(running, payment_id)["body"])["type"] == "payment.completed"


def test_voltage_faults_delay_but_never_lose_a_payment(
    running: Stack, sim_control: SimControl
) -> None:
    rt = running.runtime
    ids = [create_and_watch(rt, amount_msats=1_000 + i).record.id for i in range(6)]
    try:
        sim_control.fault(kind="status", status=500, count=15, method="GET")
        sim_control.fault(kind="rate_limit", retry_after=1, count=10, method="GET")
        sim_control.fault(kind="malformed", count=10, method="GET")
        sim_control.fault(kind="status", status=503, count=10, method="GET")
        for payment_id in ids:
            sim_control.settle(payment_id)
        for payment_id in ids:
            wait_for_event(running, payment_id, timeout=60)
    finally:
        sim_control.clear_faults()
    for payment_id in ids:
        assert len(events_for(running, payment_id)) == 1
    counters = rt.payments.counters()
    assert (
        counters.get("voltage_errors:transient", 0) + counters.get("voltage_errors:malformed", 0)
        > 0
    )
    assert all(proc.alive for proc in running.processes)


def test_worker_killed_mid_poll_loses_nothing(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    stack = make_stack(WATCHER_SWEEP_INTERVAL="0")
    rt = stack.runtime
    result = create_and_watch(rt, amount_msats=7_000, description="crash")
    payment_id = result.record.id
    fault = sim_control.fault(kind="latency", latency=30, path=payment_id, method="GET", count=1)
    worker = stack.start_worker("doomed")
    stack.start_beat()
    try:
        # The worker is now inside a poll of this payment, waiting on the slow simulator.
        wait_until(
            lambda: any(
                f["id"] == fault and f["applied"]
                for f in sim_control.call("GET", "/faults")["faults"]
            ),
            timeout=20,
            message="the slow poll to begin",
        )
        worker.kill()
        sim_control.settle(payment_id)
        assert events_for(stack, payment_id) == []
        stack.start_worker("rescuer")
        event = wait_for_event(stack, payment_id, timeout=30)
    finally:
        sim_control.clear_faults()
    assert json.loads(event["body"])["type"] == "payment.completed"
    let_ticks_pass(stack, 5)
    assert len(events_for(stack, payment_id)) == 1


def test_many_concurrent_real_polls_of_a_completed_payment_make_one_event(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    """No Celery here: 16 threads poll the same settled payment through real Voltage reads."""
    stack = make_stack()
    rt = stack.runtime
    payment_id = create_and_watch(rt, amount_msats=4_000).record.id
    sim_control.settle(payment_id)
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def poll() -> None:
        barrier.wait()
        outcome = poll_payment(rt.payments, rt.poll_voltage, rt.poll_policy, payment_id, rt.clock())
        outcomes.append(outcome.outcome)

    threads = [threading.Thread(target=poll) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == 16
    assert outcomes.count("final") == 1
    assert len(events_for(stack, payment_id)) == 1


def test_the_sweep_confirms_and_announces_what_it_finds_without_waiting_for_a_tick(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    # Ticks a minute apart and a 10-minute poll interval: only the sweep (every second) can
    # find this payment, and only its own confirmation and fan-out can announce it before the
    # next tick.
    stack = make_stack(
        WATCHER_DISPATCH_INTERVAL="60",
        WATCHER_POLL_SCHEDULE="3600:600",
        WATCHER_GENERATING_POLL_INTERVAL="60",
        WATCHER_SWEEP_INTERVAL="1",
    )
    stack.start_worker()
    stack.start_beat()
    rt = stack.runtime
    # Beat ticks once as it starts; the next tick is a minute away.
    wait_until(lambda: rt.payments.counters().get("dispatch_ticks", 0) == 1, message="first tick")
    payment = create_and_watch(rt, amount_msats=1_000).record.id
    sim_control.settle(payment)
    assert wait_for_event(stack, payment, timeout=20)["type"] == "payment.completed"
    assert rt.payments.counters().get("dispatch_ticks", 0) == 1
    assert rt.payments.counters()["voltage_requests:confirm"] == 1
    assert rt.payments.counters().get("voltage_requests:poll", 0) == 0
