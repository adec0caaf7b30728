"""Thin Celery tasks: each only wires the runtime to a plain function in watcher.engine."""

from __future__ import annotations

from watcher.celery import QUEUE_POLL, app
from watcher.engine.dispatcher import dispatch_due_polls
from watcher.engine.poller import poll_payment
from watcher.engine.sweeper import sweep_recent_finals
from watcher.logging import bind, get_logger, unbind
from watcher.runtime import get_runtime

log = get_logger(__name__)


@app.task(name="watcher.dispatch_polls", ignore_result=True)
def dispatch_polls() -> int:
    rt = get_runtime()
    s = rt.settings
    lease = s.watcher_claim_lease
    rt.store.count("dispatch_ticks")

    def send(ids: list[str]) -> None:
        poll_payments.apply_async((ids,), queue=QUEUE_POLL, expires=lease)

    return dispatch_due_polls(
        rt.store,
        now=rt.clock(),
        lease=lease,
        lookahead=s.watcher_dispatch_interval / 2,
        max_items=s.watcher_dispatch_batch,
        chunk_size=s.watcher_poll_chunk,
        send=send,
    )


@app.task(name="watcher.poll_payments", ignore_result=True)
def poll_payments(payment_ids: list[str]) -> int:
    """Poll a chunk of payments; one failing payment never stops the others."""
    rt = get_runtime()
    done = 0
    for payment_id in payment_ids:
        bind(payment_id=payment_id)
        try:
            poll_payment(rt.store, rt.poll_voltage, rt.policy, payment_id, rt.clock())
            done += 1
        except Exception:
            # Redis down or a bug: the lease brings the payment back; log and go on.
            log.exception("poll crashed", payment_id=payment_id)
        finally:
            unbind("payment_id")
    return done


@app.task(name="watcher.sweep_recent_finals", ignore_result=True)
def sweep() -> int:
    rt = get_runtime()
    s = rt.settings
    lock = rt.redis.lock(rt.store.keys.sweep_lock, timeout=120, blocking=False)
    if not lock.acquire(blocking=False):
        return 0
    try:
        result = sweep_recent_finals(
            rt.store,
            rt.poll_voltage,
            now=rt.clock(),
            margin=s.watcher_sweep_margin,
            max_pages=s.watcher_sweep_max_pages,
            wallet_id=s.voltage_wallet_id,
        )
        return result.pulled_forward
    finally:
        lock.release()
