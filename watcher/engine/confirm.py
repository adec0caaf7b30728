"""Confirmation: a payment a sweep reported final is read by id before its transition is
written (Voltage: "GET the payment by id before taking any business action").

That is one read per transition, not per pending payment. The reads of one sweep run side by
side (`run` maps over a thread pool), so a burst of settlements is confirmed in about one
Voltage round trip, not one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from watcher.engine.poller import PaymentReader, PollOutcome, poll_payment
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore
from watcher.logging import bind, get_logger, unbind
from watcher.voltage.purpose import Purpose

log = get_logger(__name__)

ConfirmOne = Callable[[str], PollOutcome | None]
Mapper = Callable[[ConfirmOne, Iterable[str]], Iterator[PollOutcome | None]]


@dataclass(frozen=True)
class Confirmed:
    read: int
    final: int
    unconfirmed: int  # reported final, but the read said otherwise (read again soon)


def confirm_reported(
    store: PaymentStore,
    voltage: PaymentReader,
    policy: PollPolicy,
    payment_ids: list[str],
    now: float,
    *,
    purpose: Purpose = Purpose.CONFIRM,
    run: Mapper = map,
) -> Confirmed:
    def confirm_one(payment_id: str) -> PollOutcome | None:
        bind(payment_id=payment_id)
        try:
            return poll_payment(store, voltage, policy, payment_id, now, purpose=purpose)
        except Exception:
            # Redis away or a bug: the payment stays pending and is reported again.
            log.exception("confirmation crashed", payment_id=payment_id)
            return None
        finally:
            unbind("payment_id")

    outcomes = [o for o in run(confirm_one, payment_ids) if o is not None]
    final = sum(o.outcome == "final" for o in outcomes)
    unconfirmed = sum(o.outcome == "unchanged" for o in outcomes)
    if unconfirmed:
        store.count("confirm_unconfirmed", unconfirmed)
    return Confirmed(read=len(outcomes), final=final, unconfirmed=unconfirmed)
