"""The fast sweep: one list call a second finds every recently finalised payment, however many
are pending.

Receive payments in final statuses, newest `updated_at` first, paged down to the watermark
(the newest `updated_at` seen so far) minus an overlap. Voltage's `updated_at` is an ordering,
not a monotonic watermark: the overlap absorbs values written a few seconds in the past, and
whatever the sweep still misses (written further back, hidden by the status filter, beyond its
page limit) is the reconciliation sweep's to find. The sweep only reports candidates: watched
payments it saw final that are pending here. Each is read by id before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from watcher.engine.store import PaymentStore
from watcher.logging import get_logger
from watcher.voltage.filters import PaymentFilter
from watcher.voltage.models import FINAL_STATUSES, PaymentList
from watcher.voltage.purpose import Purpose

log = get_logger(__name__)

# Without a watermark or a pending payment to start from, look back this far.
FIRST_SWEEP_LOOKBACK = 600.0
RECENT_FINALS = PaymentFilter(
    statuses=sorted(FINAL_STATUSES), direction="receive", sort_key="updated_at", sort_order="DESC"
)


class PaymentLister(Protocol):
    def list_payments(
        self,
        filters: PaymentFilter = ...,
        *,
        cursor: str | None = None,
        limit: int = 100,
        purpose: Purpose = ...,
    ) -> PaymentList: ...


@dataclass(frozen=True)
class SweepResult:
    pages: int
    seen: int
    candidates: list[str]
    watermark: float | None
    reached_floor: bool  # False when the page limit stopped it first


def sweep_floor(store: PaymentStore, *, now: float, overlap: float) -> float:
    """How far back this sweep pages: the watermark minus the overlap, but never before the
    oldest pending payment was created (nothing older can concern us)."""
    watermark = store.pending.watermark()
    oldest = store.pending.oldest_created()
    bounds = [b - overlap for b in (watermark, oldest) if b is not None]
    return max(bounds) if bounds else now - overlap - FIRST_SWEEP_LOOKBACK


def sweep_recent_finals(
    store: PaymentStore,
    voltage: PaymentLister,
    *,
    now: float,
    overlap: float,
    max_pages: int,
    wallet_id: str | None = None,
    page_size: int = 100,
) -> SweepResult:
    """Page through recently finalised payments and report the ones pending here."""
    floor = sweep_floor(store, now=now, overlap=overlap)
    newest: float | None = None
    reported: dict[str, None] = {}
    cursor: str | None = None
    pages = seen = 0
    reached_floor = False
    filters = RECENT_FINALS.with_fields(wallet_id=wallet_id)
    while pages < max_pages:
        page = voltage.list_payments(filters, cursor=cursor, limit=page_size, purpose=Purpose.SWEEP)
        pages += 1
        for payment in page.items:
            updated = payment.updated_at.timestamp() if payment.updated_at else None
            if updated is None:
                continue
            if updated < floor:
                reached_floor = True
                break
            seen += 1
            newest = updated if newest is None else max(newest, updated)
            if payment.is_final:
                reported[payment.id] = None
        if reached_floor or not page.has_more or page.next_cursor is None:
            reached_floor = True
            break
        cursor = page.next_cursor
    candidates = store.pending.among(list(reported))
    watermark = store.pending.raise_watermark(newest) if newest is not None else None
    store.pending.note_sweep(now, seen)
    store.count("sweeps")
    if not reached_floor:
        store.count("sweep_page_limit")
        log.warning("sweep stopped at its page limit; reconciliation covers the rest", pages=pages)
    return SweepResult(pages, seen, candidates, watermark, reached_floor)
