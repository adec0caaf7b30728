"""Control work off the queues, delivery I/O off the pool (issue 11): the pieces alone."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.conftest import Stack
from tests.support import wait_until
from watcher.celery import QUEUE_CONTROL, QUEUE_POLL
from watcher.control import Every
from watcher.delivery.engine import DeliveryEngine
from watcher.engine.watching import create_and_watch


class Blocking:
    """A chunk runner whose chunks hang until released, like a subscriber that never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[list[str]] = []
        self._lock = threading.Lock()

    def __call__(self, ids: list[str]) -> None:
        with self._lock:
            self.started.append(ids)
        self.release.wait(30)


def test_a_hanging_subscriber_gets_its_share_of_threads_and_no_more() -> None:
    runner = Blocking()
    engine = DeliveryEngine(8, runner)
    try:
        # Alone it may take half: the other half waits for whoever comes next.
        held = sum(engine.offer("hanging", [f"d{i}"]).admitted for i in range(8))
        assert held == 4
        refused = engine.offer("hanging", ["more"])
        assert refused.reason == "subscriber holds its share of delivery threads"
        assert engine.offer("healthy", ["h1"]).admitted
        assert engine.share("newcomer") == 2
        assert engine.offer("newcomer", ["n1"]).admitted
        # Every thread of the capacity busy: only a subscriber holding none still starts.
        assert engine.offer("healthy", ["h2"]).admitted
        assert engine.offer("newcomer", ["n2"]).admitted
        assert engine.offer("healthy", ["h3"]).reason == "every delivery thread is busy"
        assert engine.offer("latecomer", ["l1"]).admitted
        runner.release.set()
        wait_until(lambda: not engine.running(), message="the hanging chunks to end")
    finally:
        runner.release.set()
        engine.shutdown()


def test_any_number_of_hanging_subscribers_leave_a_newcomer_a_thread() -> None:
    runner = Blocking()
    engine = DeliveryEngine(16, runner)
    try:
        for sub in range(40):
            while engine.offer(f"hanging-{sub}", ["d"]).admitted:
                pass
        running = engine.running()
        assert len(running) == 40, "each hanging subscriber got a thread"
        assert sum(running.values()) <= engine.ceiling
        assert engine.offer("healthy", ["h"]).admitted
    finally:
        runner.release.set()
        engine.shutdown()


def test_a_chunk_that_crashes_frees_its_thread() -> None:
    def crash(_ids: list[str]) -> None:
        raise RuntimeError("boom")

    engine = DeliveryEngine(1, crash)
    try:
        assert engine.offer("s", ["d1"]).admitted
        wait_until(lambda: not engine.running(), message="the crashed chunk to free its thread")
        assert engine.offer("s", ["d2"]).admitted
    finally:
        engine.shutdown()


def test_a_failing_control_job_is_logged_once_and_keeps_running() -> None:
    calls: list[int] = []

    def job() -> None:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("redis away")

    every = Every("test", 0.01, job)
    every.start()
    try:
        wait_until(lambda: len(calls) >= 6, message="the job to go on after failures")
        assert every.failures == 0
    finally:
        every.stopping.set()


@pytest.mark.timeout(90)
def test_beat_ticks_and_sweeps_with_no_worker_consuming_anything(
    make_stack: Callable[..., Stack],
) -> None:
    """Ticks used to be messages on `watcher.control`: with every pool slot busy they expired
    unread. Beat now runs them itself, so they happen with no worker at all."""
    stack = make_stack()
    rt = stack.runtime
    payment_id = create_and_watch(rt, amount_msats=1_000).record.id
    rt.payments.reschedule(payment_id, rt.clock())  # due now (healthy sweeps: else at its expiry)
    stack.start_beat()
    wait_until(
        lambda: rt.payments.counters().get("dispatch_ticks", 0) >= 3,
        timeout=30,
        message="ticks from beat alone",
    )
    # The due payment's poll was sent to the poll queue; nothing went to the control queue.
    wait_until(lambda: rt.redis.llen(QUEUE_POLL) >= 1, timeout=30, message="a poll message")
    assert rt.redis.llen(QUEUE_CONTROL) == 0
    wait_until(lambda: rt.payments.counters().get("sweeps", 0) >= 1, timeout=30, message="a sweep")
