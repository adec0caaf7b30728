"""Thin Celery tasks: each only wires the runtime to a plain function."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Task

from watcher.celery import QUEUE_DELIVER, QUEUE_POLL, QUEUE_RETRY, app
from watcher.delivery.attempts import SLOT_WAIT, Chunk, group_by_subscription
from watcher.delivery.dispatch import dispatch_due_deliveries
from watcher.delivery.engine import Admission
from watcher.delivery.retention import forget_old
from watcher.engine.dispatcher import dispatch_due_polls
from watcher.engine.poller import PollResult, poll_record
from watcher.logging import bind, get_logger, unbind
from watcher.runtime import Runtime, get_runtime

log = get_logger(__name__)

# An outbox entry a fan-out claimed but did not acknowledge for this long is taken over.
FAN_OUT_REPAIR_IDLE_MS = 30_000


def _send(
    task: Task[Any, Any],
    ids: list[str],
    *,
    queue: str,
    expires: float,
    what: str,
    args: tuple[Any, ...] = (),
) -> None:
    """Send a chunk of ids; Flower and task events show "[25 payment ids]", not the ids."""
    options: dict[str, Any] = {"argsrepr": f"[{len(ids)} {what}]"}
    task.apply_async((ids, *args), queue=queue, expires=expires, **options)


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@app.task(name="watcher.dispatch_polls", ignore_result=True)
def dispatch_polls() -> int:
    rt = get_runtime()
    rt.payments.count("dispatch_ticks")
    return dispatch_due_polls_now(rt)


def dispatch_due_polls_now(rt: Runtime) -> int:
    """Claim what is due and send it to the poll queue (a tick's work, or a sweep's)."""
    s = rt.settings
    lease = s.watcher_claim_lease

    def send(ids: list[str]) -> None:
        _send(poll_payments, ids, queue=QUEUE_POLL, expires=lease, what="payment ids")

    return dispatch_due_polls(
        rt.payments,
        now=rt.clock(),
        lease=lease,
        lookahead=s.watcher_dispatch_interval / 2,
        max_items=s.watcher_dispatch_batch,
        chunk_size=s.watcher_poll_chunk,
        send=send,
    )


@app.task(name="watcher.poll_payments", ignore_result=True)
def poll_payments(payment_ids: list[str]) -> int:
    """Poll a chunk of payments; one failing payment never stops the others. The chunk's
    records are read in one round trip; each poll then makes one write."""
    rt = get_runtime()
    done = final = 0
    fallback = rt.list_health.in_fallback()
    records = rt.payments.get_many(payment_ids)
    for payment_id, record in zip(payment_ids, records, strict=True):
        bind(payment_id=payment_id)
        try:
            outcome = poll_record(
                rt.payments, rt.poll_voltage, rt.poll_policy, payment_id, record, rt.clock(),
                fallback=fallback,
            )  # fmt: skip
            done += 1
            final += outcome.outcome == PollResult.FINAL
        except Exception:
            # Redis down or a bug: the lease brings the payment back; log and go on.
            log.exception("poll crashed", payment_id=payment_id)
        finally:
            unbind("payment_id")
    if final:
        # Announce at once rather than at the next tick: fan out and send what is due.
        fan_out_and_dispatch(rt)
    return done


def fan_out_and_dispatch(rt: Runtime) -> int:
    now = rt.clock()
    rt.deliveries.fan_out_new(_consumer(), now)
    return dispatch_due_deliveries_now(rt)


def dispatch_due_deliveries_now(rt: Runtime) -> int:
    """Claim due first attempts and retries (leases) and send them to their own queues, no
    more of a subscriber's chunks than it has room for."""
    limits = rt.dispatch_limits

    def send(chunk: Chunk, retry: bool) -> None:
        queue = QUEUE_RETRY if retry else QUEUE_DELIVER
        args = (chunk.subscription_id,)
        _send(deliver, chunk.delivery_ids, queue=queue, expires=limits.lease, what="delivery ids",
              args=args)  # fmt: skip

    return dispatch_due_deliveries(rt.deliveries, limits, rt.clock(), send)


@app.task(name="watcher.dispatch_deliveries", ignore_result=True)
def dispatch_deliveries() -> int:
    return repair_fan_out_and_dispatch(get_runtime())


def repair_fan_out_and_dispatch(rt: Runtime) -> int:
    """The tick's delivery half: repair interrupted fan-outs, fan out anything new, send."""
    rt.deliveries.repair_fan_out(_consumer(), rt.clock(), FAN_OUT_REPAIR_IDLE_MS)
    return fan_out_and_dispatch(rt)


@app.task(name="watcher.deliver", ignore_result=True)
def deliver(delivery_ids: list[str], subscription_id: str | None = None) -> bool:
    """Hand a chunk of one subscriber's deliveries to this process's delivery threads and
    return at once: the pool slot is free again in milliseconds however long the subscriber
    takes. A subscriber over its share goes back to the schedule for a moment."""
    rt = get_runtime()
    if not delivery_ids:
        return True
    if subscription_id is None:  # a message from before chunks named their subscriber
        (chunk,) = group_by_subscription(rt.deliveries, delivery_ids[:1], 1)
        subscription_id = chunk.subscription_id
    engine = rt.delivery_engine
    if engine.running().get(subscription_id, 0) >= rt.delivery_policy.max_in_flight:
        # Each running chunk holds at most one in-flight slot: one more would only find
        # them all taken and hand its deliveries back after a Redis round trip.
        admission = Admission(False, "every in-flight slot of the subscriber is taken here")
    else:
        admission = engine.offer(subscription_id, delivery_ids)
    if not admission.admitted:
        rt.deliveries.release_claims(delivery_ids, rt.clock() + SLOT_WAIT)
        log.debug(
            "delivery chunk handed back",
            subscription_id=subscription_id,
            deliveries=len(delivery_ids),
            reason=admission.reason,
        )
    return admission.admitted


@app.task(name="watcher.forget_old", ignore_result=True)
def forget_old_task() -> int:
    rt = get_runtime()
    result = forget_old(
        rt.payments, rt.deliveries, now=rt.clock(), retention=rt.settings.watcher_retention
    )
    log.info(
        "retention",
        payments=result.payments,
        deliveries=result.deliveries,
        events=result.events,
    )
    return result.payments + result.deliveries + result.events


def dispatch_tick(rt: Runtime) -> int:
    """One dispatcher tick: polls due, interrupted fan-outs repaired, deliveries due."""
    rt.payments.count("dispatch_ticks")
    return dispatch_due_polls_now(rt) + repair_fan_out_and_dispatch(rt)
