"""Reconciliation: Voltage's own correctness recipe, a complete sweep ordered by `created_at`.

Every `interval` a pass pages through every receive payment created since the oldest pending
one (minus an overlap), with no status filter, and reports the watched ones it finds final.
It is what finds what the fast sweep cannot: an `updated_at` written far in the past, a
payment a status filter hid, a burst beyond the fast sweep's page limit.

A pass is taken one page per call and its position kept in Redis: the caller paces the calls
(one page every few seconds), so its cost per minute has a ceiling however many payments are
pending; with more of them a pass only takes longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from watcher.engine.list_jobs import ListJobs
from watcher.engine.store import PaymentStore
from watcher.engine.sweeper import PaymentLister
from watcher.logging import get_logger
from watcher.voltage.errors import VoltageError
from watcher.voltage.filters import PaymentFilter
from watcher.voltage.purpose import Purpose

log = get_logger(__name__)


class StepOutcome(StrEnum):
    IDLE = "idle"  # nothing pending, or the next pass is not due yet
    PAGE = "page"  # one page read, more to come
    PASS_DONE = "pass_done"  # noqa: S105 - not a password: the last page of a pass
    RESTARTED = "restarted"  # Voltage refused our cursor; the pass goes on from where it was


@dataclass(frozen=True)
class ReconcileStep:
    outcome: StepOutcome
    candidates: list[str]
    seen: int = 0


def reconcile_step(
    store: PaymentStore,
    jobs: ListJobs,
    voltage: PaymentLister,
    *,
    now: float,
    interval: float,
    overlap: float,
    wallet_id: str | None = None,
    page_size: int = 100,
) -> ReconcileStep:
    """Read the next page of the pass in progress, or start one when it is due."""
    state = _pass_in_progress(store, jobs, now=now, interval=interval, overlap=overlap)
    if state is None:
        return ReconcileStep(StepOutcome.IDLE, [])
    try:
        created_since = PaymentFilter(
            direction="receive",
            wallet_id=wallet_id,
            sort_key="created_at",
            sort_order="ASC",
            start_date=datetime.fromtimestamp(float(state["start"]), tz=UTC),
        )
        page = voltage.list_payments(
            created_since,
            cursor=state.get("cursor") or None,
            limit=page_size,
            purpose=Purpose.RECONCILE,
        )
    except VoltageError as exc:
        if exc.status != 400 or not state.get("cursor"):
            raise
        # A cursor Voltage no longer takes: go on from the last creation time we reached.
        resume = state.get("last_created") or state["start"]
        jobs.note_reconcile_pass({"start": resume, "cursor": ""})
        log.warning("reconciliation cursor refused; resuming by date", error=str(exc))
        return ReconcileStep(StepOutcome.RESTARTED, [])
    finals = [p.id for p in page.items if p.is_final]
    candidates = store.pending.among(finals)
    created = [p.created_at.timestamp() for p in page.items if p.created_at is not None]
    store.count("reconcile_pages")
    pages = int(state.get("pages", 0)) + 1
    if page.has_more and page.next_cursor:
        progress = {"cursor": page.next_cursor, "pages": str(pages)}
        if created:
            progress["last_created"] = repr(max(created))
        jobs.note_reconcile_pass(progress)
        return ReconcileStep(StepOutcome.PAGE, candidates, len(page.items))
    jobs.end_reconcile_pass(pages=pages, now=now)
    store.count("reconcile_passes")
    return ReconcileStep(StepOutcome.PASS_DONE, candidates, len(page.items))


def _pass_in_progress(
    store: PaymentStore, jobs: ListJobs, *, now: float, interval: float, overlap: float
) -> dict[str, str] | None:
    """The pass in progress; a new one when the last began `interval` ago and something is
    pending (it starts `overlap` before the oldest pending payment was created); else None."""
    state = jobs.reconcile_pass()
    if state.get("start"):
        return state
    last = float(state.get("started_at") or 0.0)
    oldest = store.pending.oldest_created() if now >= last + interval else None
    if oldest is None:
        return None
    state = {"start": repr(oldest - overlap), "started_at": repr(now), "pages": "0"}
    jobs.note_reconcile_pass(state)
    return state
