"""One simulated payment: its statuses, its past views (what a lagging list still shows) and
the Payment object rendered exactly as Voltage answers it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from watcher.simulator.invoices import SimInvoice
from watcher.timing import rfc3339_micros

GENERATING = "generating"
RECEIVING = "receiving"
COMPLETED = "completed"
EXPIRED = "expired"
FAILED = "failed"
FINAL_STATUSES = frozenset({COMPLETED, EXPIRED, FAILED})
ALL_STATUSES = frozenset({"sending", RECEIVING, "approved", GENERATING, EXPIRED, FAILED, COMPLETED})
# Voltage's ReceiveErrorCode enum: the codes a simulated failure may carry.
RECEIVE_ERROR_CODES = frozenset(
    {
        "receive_failed",
        "expired",
        "rejected",
        "insufficient_funds",
        "hold_not_found",
        "invalid_bolt11_invoice",
        "invalid_payment_amount",
        "invalid_address",
        "missing_address",
        "missing_payment_request",
        "incorrect_currency",
        "quote_failed",
        "exchange_transfer_failed",
        "upstream_failure",
        "no_route",
        "transaction_build_failed",
        "node_permission_denied",
        "broadcast_failed",
        "broadcast_fee_above_max",
    }
)


MICROS = 1_000_000


def to_micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (floats would lose the last digits)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * MICROS + delta.microseconds


@dataclass(slots=True)
class HistoryEntry:
    event_type: str
    micros: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentView:
    """The parts of a payment a transition changes: what a lagging list still shows."""

    status: str
    updated_micros: int
    generated: bool
    error: dict[str, Any] | None
    receipt_count: int
    paid_msats: int | None


@dataclass(slots=True)
class SimPayment:
    """One simulated receive, with the invoice secrets the API never shows before settlement."""

    id: str
    organization_id: str
    environment_id: str
    wallet_id: str
    requested_msats: int | None
    description: str | None
    expiration: int
    metadata: dict[str, str]
    invoice: SimInvoice
    created_micros: int
    visible_micros: int
    ready_micros: int
    status: str = GENERATING
    generated: bool = False  # the invoice is shown once the payment has been `receiving`
    updated_micros: int = 0
    error: dict[str, Any] | None = None
    receipts: list[dict[str, Any]] = field(default_factory=list)
    paid_msats: int | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    # (wall micros a transition took effect, the view until then), oldest first.
    past: list[tuple[int, PaymentView]] = field(default_factory=list)
    hidden_from_filtered_lists: bool = False

    @property
    def expires_micros(self) -> int:
        return self.invoice.expires_at * MICROS

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def next_deadline(self) -> int | None:
        """When lazy time advancement next has something to do for this payment."""
        if self.status == GENERATING:
            return self.ready_micros
        if self.status == RECEIVING:
            return self.expires_micros + 1  # expired once now > timestamp + expiry
        return None

    def view(self) -> PaymentView:
        return PaymentView(
            status=self.status,
            updated_micros=self.updated_micros,
            generated=self.generated,
            error=self.error,
            receipt_count=len(self.receipts),
            paid_msats=self.paid_msats,
        )

    def view_at(self, micros: int) -> PaymentView:
        """What the payment looked like at wall time `micros` (after its creation)."""
        for changed, view in self.past:
            if micros < changed:
                return view
        return self.view()

    def render(self, view: PaymentView | None = None) -> dict[str, Any]:
        """The Payment object exactly as Voltage's GET answers it (as of `view`, default now)."""
        v = view if view is not None else self.view()
        amount_msats = v.paid_msats if v.paid_msats is not None else self.requested_msats
        amount_msats = amount_msats or 0
        requested = btc_amount(self.requested_msats) if self.requested_msats is not None else None
        shown_request = self.invoice.payment_request if v.generated else None
        return {
            "direction": "receive",
            "payment_category": "standard",
            "id": self.id,
            "wallet_id": self.wallet_id,
            "organization_id": self.organization_id,
            "environment_id": self.environment_id,
            "metadata": dict(self.metadata) if self.metadata else None,
            "created_at": rfc3339_micros(self.created_micros),
            "updated_at": rfc3339_micros(v.updated_micros),
            "currency": "btc",
            "type": "bolt11",
            "requested_amount": requested,
            "data": {
                "payment_request": shown_request,
                "amount": btc_amount(amount_msats),
                "amount_msats": amount_msats,
                "memo": self.description,
                "expiration": self.expiration,
                "receipts": [json.loads(json.dumps(r)) for r in self.receipts[: v.receipt_count]],
            },
            "status": v.status,
            "error": dict(v.error) if v.error is not None else None,
            "exchanges": [],
            "frozen": [],
        }

    def render_history(self) -> dict[str, Any]:
        return {
            "events": [
                {
                    "event_type": entry.event_type,
                    "error": entry.error,
                    "time": rfc3339_micros(entry.micros),
                    "position": position,
                }
                for position, entry in enumerate(self.history)
            ]
        }

    def render_raw(self, now_micros: int) -> dict[str, Any]:
        """Everything, secrets included, for debugging and benchmarks."""
        payment = self.render()
        payment["sim"] = {
            "visible": now_micros >= self.visible_micros,
            "visible_at": rfc3339_micros(self.visible_micros),
            "ready_at": rfc3339_micros(self.ready_micros),
            "expires_at": rfc3339_micros(self.expires_micros),
            "payment_request": self.invoice.payment_request,
            "payment_hash": self.invoice.payment_hash,
            "preimage": self.invoice.preimage,
            "history": self.render_history()["events"],
            "hidden_from_filtered_lists": self.hidden_from_filtered_lists,
        }
        return payment


def btc_amount(msats: int) -> dict[str, Any]:
    return {"currency": "btc", "amount": msats, "unit": "msats"}


def receive_error(code: str, detail: str) -> dict[str, Any]:
    return {"type": "receive_failed", "code": code, "detail": detail, "context": None}
