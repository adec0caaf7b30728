"""What a create-receive request may hold, checked the way Voltage documents it: one 422 that
names every bad field, so a client fixes them all in one round.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from watcher.simulator.errors import invalid_data
from watcher.simulator.invoices import MAX_DESCRIPTION_BYTES

PAYMENT_KINDS = frozenset({"bolt11", "onchain", "bip21", "taprootasset"})
DEFAULT_EXPIRATION = 3600
MAX_EXPIRATION = 86400
MAX_METADATA_ENTRIES = 50
MAX_METADATA_LENGTH = 256
# 21 million BTC: no invoice can ask for more.
MAX_AMOUNT_MSATS = 21_000_000 * 100_000_000 * 1000


def canonical_uuid(value: str) -> str | None:
    """The lower-case hyphenated form Voltage answers with, or None if not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass(frozen=True)
class NewPayment:
    """A validated create-receive request."""

    id: str
    wallet_id: str
    amount_msats: int | None
    description: str | None
    expiration: int
    metadata: dict[str, str]


def validate_create(body: object) -> NewPayment:
    """Check a create-receive body the way Voltage documents it; raise 422 naming each field."""
    if not isinstance(body, dict):
        raise invalid_data([("body", "expected a JSON object")])
    errors: list[tuple[str, str]] = []  # in the order Voltage names them

    payment_id = _validate_id(body.get("id"), errors)

    wallet_id = body.get("wallet_id")
    if wallet_id is None:
        errors.append(("wallet_id", "required"))
    elif not isinstance(wallet_id, str) or not wallet_id.strip():
        errors.append(("wallet_id", "expected a non-empty string"))

    _validate_kind(body.get("payment_kind"), errors)
    amount_msats = _validate_amount(body, errors)

    currency = body.get("currency")
    if currency is not None and currency != "btc":
        errors.append(("currency", "expected 'btc'"))

    description = body.get("description")
    _validate_description(description, errors)

    expiration = body.get("expiration")
    if expiration is None:
        expiration = DEFAULT_EXPIRATION
    elif not is_int(expiration) or not 1 <= expiration <= MAX_EXPIRATION:
        errors.append(("expiration", f"expected whole seconds from 1 to {MAX_EXPIRATION}"))

    metadata = _validate_metadata(body.get("metadata"), errors)

    if errors or payment_id is None:
        raise invalid_data(errors or [("id", "required")])
    return NewPayment(
        id=payment_id,
        wallet_id=str(wallet_id),
        amount_msats=amount_msats,
        description=description,
        expiration=int(expiration),
        metadata=metadata,
    )


def _validate_id(raw_id: object, errors: list[tuple[str, str]]) -> str | None:
    if raw_id is None:
        errors.append(("id", "required"))
        return None
    payment_id = canonical_uuid(raw_id) if isinstance(raw_id, str) else None
    if payment_id is None:
        errors.append(("id", "expected a UUID string"))
    return payment_id


def _validate_kind(kind: object, errors: list[tuple[str, str]]) -> None:
    if kind is None:
        errors.append(("payment_kind", "required"))
    elif not isinstance(kind, str) or kind not in PAYMENT_KINDS:
        errors.append(("payment_kind", f"expected one of {', '.join(sorted(PAYMENT_KINDS))}"))
    elif kind != "bolt11":
        errors.append(
            ("payment_kind", f"the simulator only supports bolt11 receives, not {kind!r}")
        )


def _validate_description(description: object, errors: list[tuple[str, str]]) -> None:
    if description is None:
        return
    if not isinstance(description, str):
        errors.append(("description", "expected a string"))
    elif len(description.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        errors.append(
            ("description", f"at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8 fit an invoice")
        )


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_amount(body: dict[str, Any], errors: list[tuple[str, str]]) -> int | None:
    legacy = body.get("amount_msats")
    amount = body.get("amount")
    if legacy is not None and amount is not None:
        errors.append(("amount", "give either amount or amount_msats, not both"))
        errors.append(("amount_msats", "give either amount or amount_msats, not both"))
        return None
    if legacy is not None:
        if not is_int(legacy) or not 0 <= legacy <= MAX_AMOUNT_MSATS:
            errors.append(("amount_msats", "expected a whole number of msats, 0 or more"))
            return None
        return int(legacy)
    if amount is None:
        return None
    if not isinstance(amount, dict):
        errors.append(("amount", 'expected an object like {"amount": 10000, "currency": "btc"}'))
        return None
    value = amount.get("amount")
    amount_currency = amount.get("currency")
    ok = True
    if amount_currency is None:
        errors.append(("amount.currency", "required"))
        ok = False
    elif amount_currency != "btc":
        errors.append(("amount.currency", "the simulator only supports 'btc' amounts"))
        ok = False
    if value is None:
        errors.append(("amount.amount", "required"))
        ok = False
    elif not is_int(value) or not 0 <= value <= MAX_AMOUNT_MSATS:
        errors.append(("amount.amount", "expected a whole number of msats, 0 or more"))
        ok = False
    if amount.get("negative") is True:
        errors.append(("amount.negative", "a receive cannot ask for a negative amount"))
        ok = False
    return value if ok and isinstance(value, int) else None


def _validate_metadata(metadata: object, errors: list[tuple[str, str]]) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        errors.append(("metadata", "expected an object of string keys and string values"))
        return {}
    if len(metadata) > MAX_METADATA_ENTRIES:
        errors.append(("metadata", f"at most {MAX_METADATA_ENTRIES} entries"))
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_LENGTH:
            errors.append(
                (f"metadata.{key[:32]}...", f"keys are at most {MAX_METADATA_LENGTH} characters")
            )
        if not isinstance(value, str):
            errors.append((f"metadata.{key[:64]}", "values must be strings"))
        elif len(value) > MAX_METADATA_LENGTH:
            errors.append(
                (f"metadata.{key[:64]}", f"values are at most {MAX_METADATA_LENGTH} characters")
            )
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}
