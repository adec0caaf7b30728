"""Detection by list (issue 12): the fast sweep and reconciliation detect, reads by id confirm,
and per-payment polls take over only while list calls fail. Real Redis, the real simulator
over HTTP, its list faults, and (for the fallback) the real worker and beat."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from watcher.detection import reconcile_now, sweep_now
from watcher.engine.confirm import confirm_reported
from watcher.engine.poller import poll_payment
from watcher.engine.sweeper import sweep_recent_finals
from watcher.engine.watching import create_and_watch
from watcher.runtime import Runtime
from watcher.simulator.server import SimulatorServer
from watcher.voltage.purpose import Purpose


def requests_for(rt: Runtime, purpose: Purpose) -> int:
    return rt.payments.counters().get(f"voltage_requests:{purpose}", 0)


def events_for(rt: Runtime, payment_id: str) -> list[dict[str, str]]:
    return [e for e in rt.payments.outbox_events() if e["payment_id"] == payment_id]


def new_payment(rt: Runtime, **options: Any) -> str:
    result = create_and_watch(rt, amount_msats=1_000, **options)
    assert result.invoice_ready
    return result.record.id


@pytest.fixture
def sim_config(sim_control: SimControl) -> Iterator[Callable[..., None]]:
    """Change the shared simulator's config for one test; put it back afterwards."""
    before = sim_control.call("GET", "/config")

    def patch(**values: Any) -> None:
        sim_control.call("PATCH", "/config", values)

    yield patch
    restore = {k: before.get(k, 0.0) for k in ("updated_at_backdate", "list_lag")}
    sim_control.call("PATCH", "/config", restore)
    sim_control.clear_faults()


def test_a_watched_payment_is_read_only_at_its_expiry_while_sweeps_are_healthy(
    make_stack: Callable[..., Stack],
) -> None:
    rt = make_stack().runtime
    payment_id = new_payment(rt, expiration=600)
    record = rt.payments.get(payment_id)
    assert record is not None
    assert record.expires_at is not None
    assert rt.payments.next_poll_at(payment_id) == pytest.approx(
        record.expires_at + rt.poll_policy.expiry_grace
    )
    assert requests_for(rt, Purpose.CREATE) == 1
    assert requests_for(rt, Purpose.READ_BACK) >= 1


def test_the_sweep_reports_a_settlement_and_one_read_confirms_it(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    rt = make_stack().runtime
    payment_id = new_payment(rt)
    sim_control.settle(payment_id)
    assert sweep_now(rt) == 1
    (event,) = events_for(rt, payment_id)
    assert event["type"] == "payment.completed"
    assert requests_for(rt, Purpose.CONFIRM) == 1
    assert requests_for(rt, Purpose.SWEEP) >= 1
    # A second sweep sees it again (overlap) but reads nothing: it is no longer pending.
    assert sweep_now(rt) == 0
    assert requests_for(rt, Purpose.CONFIRM) == 1


def test_a_payment_whose_updated_at_is_backdated_past_the_watermark_is_still_found(
    make_stack: Callable[..., Stack],
    sim_control: SimControl,
    sim_config: Callable[..., None],
    simulator: SimulatorServer,
) -> None:
    rt = make_stack(WATCHER_SWEEP_OVERLAP="10").runtime
    marker = new_payment(rt)
    candidates = [new_payment(rt) for _ in range(5)]
    sim_control.settle(marker)
    assert sweep_now(rt) == 1  # the watermark is now the marker's updated_at
    watermark = float(rt.redis.hget(rt.payments.keys.sweep_state, "watermark") or 0)
    sim_config(updated_at_backdate=8)
    for payment_id in candidates:
        settled = sim_control.settle(payment_id)
        if _timestamp(settled["updated_at"]) < watermark:
            break
    else:
        pytest.fail("no settlement was backdated below the watermark (8 s of backdating)")
    assert sweep_now(rt) == 1
    assert len(events_for(rt, payment_id)) == 1


def test_a_payment_the_list_omits_is_found_by_reconciliation(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    rt = make_stack(WATCHER_RECONCILE_INTERVAL="0").runtime
    payment_id = new_payment(rt)
    sim_control.call("POST", f"/payments/{payment_id}/hide-from-filtered-lists")
    sim_control.settle(payment_id)
    assert sweep_now(rt) == 0, "the status-filtered list hides it"
    assert events_for(rt, payment_id) == []
    found = wait_until(
        lambda: reconcile_now(rt) or None, timeout=30, interval=0.0, message="reconciliation"
    )
    assert found == 1
    assert len(events_for(rt, payment_id)) == 1
    assert rt.payments.counters()["reconcile_confirmed"] == 1
    assert requests_for(rt, Purpose.RECONCILE) >= 1


def test_two_sweeps_at_once_make_one_event(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    rt = make_stack().runtime
    payment_id = new_payment(rt)
    sim_control.settle(payment_id)
    both_read = threading.Barrier(2, timeout=10)

    class RacingReader:
        """Both sweeps read the payment before either writes: the compare-and-set decides."""

        def get_payment(self, pid: str, *, purpose: Purpose = Purpose.OTHER) -> Any:
            payment = rt.poll_voltage.get_payment(pid, purpose=purpose)
            both_read.wait()
            return payment

    finals: list[int] = []

    def sweep() -> None:
        result = sweep_recent_finals(
            rt.payments, rt.poll_voltage, now=rt.clock(), overlap=10, max_pages=3
        )
        confirmed = confirm_reported(
            rt.payments, RacingReader(), rt.poll_policy, result.candidates, rt.clock()
        )
        finals.append(confirmed.final)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(finals) == [0, 1]
    assert len(events_for(rt, payment_id)) == 1
    assert requests_for(rt, Purpose.CONFIRM) == 2


def test_an_expired_invoice_no_sweep_reported_gets_one_expiry_check(
    make_stack: Callable[..., Stack], sim_control: SimControl
) -> None:
    rt = make_stack().runtime
    payment_id = new_payment(rt)
    sim_control.call("POST", f"/payments/{payment_id}/hide-from-filtered-lists")
    sim_control.expire(payment_id)
    assert sweep_now(rt) == 0
    record = rt.payments.get(payment_id)
    assert record is not None
    assert record.expires_at is not None
    due = rt.payments.next_poll_at(payment_id)
    assert due is not None
    outcome = poll_payment(rt.payments, rt.poll_voltage, rt.poll_policy, payment_id, due)
    assert outcome.outcome == "final"
    assert requests_for(rt, Purpose.EXPIRY_CHECK) == 1
    assert events_for(rt, payment_id)[0]["type"] == "payment.expired"


@pytest.mark.timeout(150)
def test_with_the_list_failing_fallback_polls_detect_and_sweeps_resume_after(
    make_stack: Callable[..., Stack],
    sim_control: SimControl,
    sim_config: Callable[..., None],
) -> None:
    stack = make_stack(WATCHER_FALLBACK_AFTER="1", WATCHER_POLL_SCHEDULE="3600:0.5")
    rt = stack.runtime
    stack.start_worker()
    stack.start_beat()
    sim_control.fault(kind="status", status=503, route="list")
    during = new_payment(rt)
    new_payment(rt)  # stays pending: only a list call that works can end the fallback
    wait_until(rt.list_health.in_fallback, timeout=40, message="the fallback to begin")
    sim_control.settle(during)
    wait_until(lambda: events_for(rt, during), timeout=30, message="detection by fallback polls")
    assert requests_for(rt, Purpose.FALLBACK_POLL) >= 1
    assert rt.payments.counters()["fallback_entries"] == 1

    sim_control.clear_faults()
    wait_until(lambda: not rt.list_health.in_fallback(), timeout=60, message="sweeps to resume")
    after = new_payment(rt)
    confirms = requests_for(rt, Purpose.CONFIRM)
    polls = requests_for(rt, Purpose.FALLBACK_POLL)
    sim_control.settle(after)
    wait_until(lambda: events_for(rt, after), timeout=30, message="detection by the sweep")
    assert requests_for(rt, Purpose.CONFIRM) == confirms + 1
    # No fallback poll read the new payment: it is on the sparse cadence again.
    assert requests_for(rt, Purpose.FALLBACK_POLL) - polls <= 2


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
