"""The create-receive request body (shared/voltage-api.md), built and checked without a client
so the API layer can refuse a bad create the same way before it reaches Voltage."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

from watcher.voltage.checks import check_metadata, check_text
from watcher.voltage.limits import MAX_EXPIRATION


class ReceiveFields(TypedDict):
    """`build_receive_body`'s arguments, which the client's create calls pass on as given."""

    wallet_id: str
    amount_msats: int | None
    description: NotRequired[str | None]
    expiration: NotRequired[int | None]
    metadata: NotRequired[Mapping[str, str] | None]
    payment_id: NotRequired[str | None]


def build_receive_body(
    *,
    wallet_id: str,
    amount_msats: int | None,
    description: str | None = None,
    expiration: int | None = None,
    metadata: Mapping[str, str] | None = None,
    payment_id: str | None = None,
) -> dict[str, Any]:
    """The create-receive body Voltage wants; ValueError naming the bad argument."""
    check_text(wallet_id, "wallet_id")
    if amount_msats is not None and not _is_int(amount_msats, minimum=0):
        raise ValueError("amount_msats must be an integer >= 0 (or None for any amount)")
    if description is not None and not isinstance(description, str):
        raise ValueError("description must be a string")
    if expiration is not None and not _is_int(expiration, minimum=1, maximum=MAX_EXPIRATION):
        raise ValueError(f"expiration must be an integer from 1 to {MAX_EXPIRATION} seconds")
    meta = check_metadata(metadata, "metadata")
    body: dict[str, Any] = {
        "id": _payment_uuid(payment_id),
        "wallet_id": wallet_id,
        "payment_kind": "bolt11",
    }
    if amount_msats is not None:
        body["amount"] = {"amount": amount_msats, "currency": "btc"}
    body["currency"] = "btc"
    if description is not None:
        body["description"] = description
    if expiration is not None:
        body["expiration"] = expiration
    if meta:
        body["metadata"] = meta
    return body


def _is_int(value: object, *, minimum: int, maximum: int | None = None) -> bool:
    """A real int (not a bool) in range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return False
    return maximum is None or value <= maximum


def _payment_uuid(payment_id: str | None) -> str:
    """A fresh id, or the caller's in Voltage's form: its retries then reuse one id."""
    if payment_id is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(payment_id))
    except (TypeError, ValueError, AttributeError):
        raise ValueError("payment_id must be a UUID") from None
