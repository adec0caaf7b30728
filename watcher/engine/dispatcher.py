"""The dispatcher tick: claim what is due (with a lease) and hand it to workers in chunks."""

from __future__ import annotations

from collections.abc import Callable

from watcher.engine.store import PaymentStore

_CLAIM_ROUND = 500


def dispatch_due_polls(
    store: PaymentStore,
    *,
    now: float,
    lease: float,
    lookahead: float = 0.0,
    max_items: int,
    chunk_size: int,
    send: Callable[[list[str]], None],
) -> int:
    """Claim up to `max_items` due payments and send them as poll tasks of `chunk_size` ids.

    Chunking keeps 10k due payments from meaning 10k broker messages per tick; the lease
    means a chunk lost with its worker comes due again by itself. `lookahead` also takes what
    falls due before the middle of the next tick: without it a 1 s poll interval, measured
    from a poll that ran just after a tick, lands just after the next tick and waits a whole
    extra one (measured: 1.94 s between polls instead of 1 s).
    """
    sent = 0
    while sent < max_items:
        want = min(_CLAIM_ROUND, max_items - sent)
        ids = store.claim_due(now + lookahead, lease, want)
        for start in range(0, len(ids), chunk_size):
            send(ids[start : start + chunk_size])
        sent += len(ids)
        if len(ids) < want:
            break
    return sent
