"""Detection as beat's control loop runs it: the fast sweep and reconciliation list, reads by
id confirm, and the fallback to per-payment polls while list calls fail.

Both jobs run on threads of the beat process (see control.py), so nothing queues ahead of them
on the worker pool, and confirmed transitions are fanned out and handed to delivery at once.
Each takes a short Redis lock (engine/list_jobs.py): one beat per deployment is the rule, but
during a redeploy two may overlap for a moment.
"""

from __future__ import annotations

from collections.abc import Callable

from watcher.engine.confirm import Confirmed, confirm_reported
from watcher.engine.list_jobs import ListJob
from watcher.engine.reconciler import StepOutcome, reconcile_step
from watcher.engine.sweeper import sweep_recent_finals
from watcher.logging import get_logger
from watcher.runtime import Runtime
from watcher.settings import Settings
from watcher.tasks import fan_out_and_dispatch
from watcher.voltage.errors import VoltageError

log = get_logger(__name__)


def sweep_now(rt: Runtime) -> int:
    """One fast sweep (when anything is pending and list calls are not backing off); returns
    the transitions it confirmed."""
    s = rt.settings

    def sweep(now: float) -> list[str]:
        return sweep_recent_finals(
            rt.payments,
            rt.poll_voltage,
            now=now,
            overlap=s.watcher_sweep_overlap,
            max_pages=s.watcher_sweep_max_pages,
            wallet_id=s.voltage_wallet_id,
        ).candidates

    candidates = _list_job(rt, "sweep", sweep)
    return confirm_and_announce(rt, candidates or []).final


def reconcile_now(rt: Runtime) -> int:
    """One page of reconciliation (a pass is due every WATCHER_RECONCILE_INTERVAL)."""
    s = rt.settings

    def step(now: float) -> list[str] | None:
        rt.payments.pending.backfill(now)
        result = reconcile_step(
            rt.payments,
            rt.list_jobs,
            rt.poll_voltage,
            now=now,
            interval=s.watcher_reconcile_interval,
            overlap=s.watcher_sweep_overlap,
            wallet_id=s.voltage_wallet_id,
        )
        return None if result.outcome is StepOutcome.IDLE else result.candidates

    confirmed = confirm_and_announce(rt, _list_job(rt, "reconcile", step) or [])
    if confirmed.final:
        rt.payments.count("reconcile_confirmed", confirmed.final)
        # Missed by the fast sweep (backdated, hidden by its filter) or not reached by it yet.
        # Usually a race with the next fast sweep, not news: the counter tells when it is not.
        log.debug("reconciliation confirmed transitions first", confirmed=confirmed.final)
    return confirmed.final


def _list_job(
    rt: Runtime, job: ListJob, run: Callable[[float], list[str] | None]
) -> list[str] | None:
    """Run one list job under its lock, when something is pending and list calls are not
    backing off; note its outcome for the fallback. None when it listed nothing."""
    now = rt.clock()
    if rt.payments.pending_count() == 0:
        # Nothing to detect, nothing to poll: a fallback has no reason to outlive it.
        if rt.list_health.in_fallback():
            list_succeeded(rt, now)
        return None
    if not rt.list_health.may_list(now):
        return None
    with rt.list_jobs.locked(job, sweep_lock_ttl(rt.settings)) as held:
        if not held:
            return None
        try:
            candidates = run(now)
        except VoltageError as exc:
            list_failed(rt, exc, now, job)
            return None
        if candidates is not None:
            list_succeeded(rt, now)
        return candidates


def confirm_and_announce(rt: Runtime, candidates: list[str]) -> Confirmed:
    """Read each reported payment by id; fan out and send what became final, now."""
    if not candidates:
        return Confirmed(read=0, final=0, unconfirmed=0)
    confirmed = confirm_reported(
        rt.payments,
        rt.poll_voltage,
        rt.poll_policy,
        candidates,
        rt.clock(),
        run=rt.confirm_pool.map,
    )
    if confirmed.final:
        fan_out_and_dispatch(rt)
    return confirmed


def list_succeeded(rt: Runtime, now: float) -> None:
    if rt.list_health.succeeded(now).left_fallback:
        rt.payments.count("fallback_exits")
        log.warning("list calls work again; sweeps detect, per-payment polls stop")


def list_failed(rt: Runtime, exc: VoltageError, now: float, job: str) -> None:
    """A list call failed (after its own retries): back off, and fall back to per-payment
    polls once they have failed for WATCHER_FALLBACK_AFTER seconds."""
    change = rt.list_health.failed(now, exc.retry_after)
    rt.payments.count(f"list_errors:{job}")
    if change.entered_fallback:
        rt.payments.count("fallback_entries")
        first_step = rt.poll_policy.steps[0][1] if rt.poll_policy.steps else 2.0
        moved = rt.payments.pending.pull_forward(now, spread=first_step)
        log.error(
            "list calls keep failing; falling back to per-payment polls",
            failing_for=round(change.failing_for, 1),
            pulled_forward=moved,
            status=exc.status,
            error=str(exc),
        )
    else:
        log.info("list call failed; backing off", job=job, status=exc.status, error=str(exc))


def sweep_lock_ttl(settings: Settings) -> float:
    """Short, so a SIGKILLed holder or a Redis restart frees it within seconds."""
    return max(10.0, 3 * settings.watcher_sweep_interval)
