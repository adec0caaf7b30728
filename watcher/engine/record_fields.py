"""What a payment record's hash holds for one Voltage answer, and the event a final one makes.

Plain functions of the answer, apart from the store, so the poll, the adoption and the benches
build the same fields the same way.
"""

from __future__ import annotations

import json

from watcher.engine.records import event_body, transition_event_id
from watcher.voltage.models import Payment


def payment_fields(payment: Payment, *, decoded_request: str | None = None) -> dict[str, str]:
    """Fields of the record that mirror Voltage's latest answer.

    `decoded_request` is the BOLT11 whose hash, expiry and amount the record already holds: an
    unchanged poll does not decode it again (decoding was 46% of a poll's CPU, measured by
    bench/engine.py), and fields not written here keep their stored values.
    """
    fields: dict[str, str] = {"raw": json.dumps(payment.raw, separators=(",", ":"))}
    if payment.updated_at:
        fields["updated_at"] = payment.updated_at.isoformat()
    if payment.created_at:
        fields["created_at"] = payment.created_at.isoformat()
    if payment.wallet_id:
        fields["wallet_id"] = payment.wallet_id
    if payment.metadata:
        fields["metadata"] = json.dumps(payment.metadata, separators=(",", ":"))
    data = payment.data
    if data is not None:
        if data.amount_msats is not None:
            fields["amount_msats"] = str(data.amount_msats)
        if data.memo:
            fields["description"] = data.memo
    request = payment.payment_request
    if request:
        fields["payment_request"] = request
        invoice = payment.invoice() if request != decoded_request else None
        if invoice is not None:
            fields["payment_hash"] = invoice.payment_hash
            fields["expires_at"] = repr(invoice.expires_at.timestamp())
            if invoice.amount_msat is not None and "amount_msats" not in fields:
                fields["amount_msats"] = str(invoice.amount_msat)
    return fields


def final_event(
    payment: Payment, *, previous_status: str | None, now: float
) -> tuple[str, str, str]:
    """Event id, type and body for a payment that is final; empty strings otherwise."""
    if not payment.is_final:
        return "", "", ""
    event_type = f"payment.{payment.status}"
    body = event_body(
        event_type=event_type,
        at=now,
        payment_id=payment.id,
        previous_status=previous_status,
        status=payment.status,
        payment=payment.raw,
    )
    return transition_event_id(payment.id, payment.status), event_type, body


def adopted_fields(
    payment: Payment, *, source: str, now: float, extra: dict[str, str] | None
) -> dict[str, str]:
    """A new record's hash: version 1, nothing polled yet."""
    return {
        "id": payment.id,
        "status": payment.status,
        "version": "1",
        "source": source,
        "watched_at": repr(now),
        "status_changed_at": repr(now),
        "poll_count": "0",
        "error_count": "0",
        **payment_fields(payment),
        **(extra or {}),
    }
