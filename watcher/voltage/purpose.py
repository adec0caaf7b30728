"""Why the watcher sent a Voltage request: every request is counted under one of these, so the
bill can be read by cause (`/metrics`, `watcher status`, the benches)."""

from __future__ import annotations

from enum import StrEnum


class Purpose(StrEnum):
    CREATE = "create"  # POST a new receive
    READ_BACK = "read_back"  # read a fresh receive until its BOLT11 is there
    ADOPT = "adopt"  # read a payment created elsewhere to start watching it
    CONFIRM = "confirm"  # read a payment a sweep reported final, before writing it
    SWEEP = "sweep"  # a page of the fast sweep (final statuses, newest updated_at first)
    RECONCILE = "reconcile"  # a page of the reconciliation sweep (created_at order, no filter)
    EXPIRY_CHECK = "expiry_check"  # the one read just after an invoice expires
    FALLBACK_POLL = "fallback_poll"  # a per-payment poll while list calls fail
    HINT = "hint"  # a read on a Voltage webhook
    POLL = "poll"  # any other scheduled read (an unconfirmed report coming round again)
    OTHER = "other"  # callers that did not say (the CLI, scripts)
