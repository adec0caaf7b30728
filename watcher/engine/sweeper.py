"""List sweeps: one list call finds every recently finalised payment, however many are pending.

This is what keeps the Voltage bill growing with transitions, not with pending payments: the
sweep only *pulls forward* the watched payments it finds; the normal poll then confirms the
transition with a read of the payment before anything is emitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from watcher.engine.store import PaymentStore
from watcher.logging import get_logger
from watcher.voltage.models import FINAL_STATUSES, Payment

log = get_logger(__name__)

# Without a watermark (first sweep ever) look back this far beyond the margin.
FIRST_SWEEP_LOOKBACK = 600.0


class PaymentLister(Protocol):
    def iter_payments(
        self,
        *,
        max_pages: int | None = None,
        statuses: list[str] | None = None,
        sort_key: str | None = None,
        sort_order: str | None = None,
        wallet_id: str | None = None,
        direction: str | None = None,
        limit: int = 100,
    ) -> Iterator[Payment]: ...


@dataclass(frozen=True)
class SweepResult:
    seen: int
    pulled_forward: int
    watermark: float


def sweep_recent_finals(
    store: PaymentStore,
    voltage: PaymentLister,
    *,
    now: float,
    margin: float,
    max_pages: int,
    wallet_id: str | None = None,
    page_size: int = 100,
) -> SweepResult:
    """Page through payments finalised since the last sweep (newest first) and pull every
    watched one forward to be re-read at once."""
    state = store.redis.hgetall(store.keys.sweep_state)
    watermark = float(state["watermark"]) if state.get("watermark") else None
    stop_before = (
        watermark - margin if watermark is not None else now - margin - FIRST_SWEEP_LOOKBACK
    )
    newest = watermark or 0.0
    seen = pulled = 0
    for payment in voltage.iter_payments(
        max_pages=max_pages,
        statuses=sorted(FINAL_STATUSES),
        sort_key="updated_at",
        sort_order="DESC",
        wallet_id=wallet_id,
        limit=page_size,
    ):
        if payment.updated_at is None:
            continue
        updated = payment.updated_at.timestamp()
        if updated < stop_before:
            break
        seen += 1
        newest = max(newest, updated)
        if store.reschedule(payment.id, now, only_earlier=True):
            pulled += 1
    store.redis.hset(
        store.keys.sweep_state,
        mapping={"watermark": repr(newest), "last_sweep_at": repr(now), "last_seen": seen},
    )
    store.count("sweeps")
    if pulled:
        store.count("sweep_pulled_forward", pulled)
        log.info("sweep pulled payments forward", pulled=pulled, seen=seen)
    return SweepResult(seen=seen, pulled_forward=pulled, watermark=newest)
