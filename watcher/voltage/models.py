"""Tolerant models of what Voltage returns.

Voltage adds fields over time, so unknown fields are kept (``extra="allow"``) and the raw JSON
object is kept beside the parsed one: webhooks forward what Voltage said, not our reading of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import bolt11
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from watcher.voltage.errors import VoltageMalformedResponse


class PaymentStatus(StrEnum):
    """Voltage's `PaymentStatus` enum. A StrEnum so it compares equal to the raw string."""

    SENDING = "sending"
    RECEIVING = "receiving"
    APPROVED = "approved"
    GENERATING = "generating"
    EXPIRED = "expired"
    FAILED = "failed"
    COMPLETED = "completed"


FINAL_STATUSES = frozenset({PaymentStatus.COMPLETED, PaymentStatus.FAILED, PaymentStatus.EXPIRED})


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PaymentError(_Tolerant):
    type: str | None = None
    code: str | None = None
    detail: str | None = None
    context: dict[str, Any] | None = None


class Amount(_Tolerant):
    currency: str | None = None
    amount: int | None = None
    unit: str | None = None


class PaymentData(_Tolerant):
    payment_request: str | None = None
    amount_msats: int | None = None
    memo: str | None = None
    expiration: int | None = None
    receipts: list[dict[str, Any]] = Field(default_factory=list)


class Payment(_Tolerant):
    """One payment as Voltage reports it. `status` stays a plain string so a status Voltage
    adds later parses instead of failing; compare it with `PaymentStatus` members."""

    id: str
    status: str
    direction: str | None = None
    wallet_id: str | None = None
    organization_id: str | None = None
    environment_id: str | None = None
    type: str | None = None
    currency: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    requested_amount: Amount | None = None
    data: PaymentData | None = None
    error: PaymentError | None = None

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_api(cls, obj: Any) -> Payment:
        """Parse one payment object, keeping the raw JSON; a wrong shape is malformed."""
        if not isinstance(obj, dict):
            raise VoltageMalformedResponse(f"expected a payment object, got {type(obj).__name__}")
        try:
            payment = cls.model_validate(obj)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise VoltageMalformedResponse(f"payment object has invalid fields: {fields}") from None
        payment._raw = obj
        return payment

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    @property
    def known_status(self) -> PaymentStatus | None:
        try:
            return PaymentStatus(self.status)
        except ValueError:
            return None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def payment_request(self) -> str | None:
        return self.data.payment_request if self.data else None

    def invoice(self) -> Invoice | None:
        """The decoded BOLT11, or None while Voltage has not produced one yet."""
        request = self.payment_request
        return decode_invoice(request) if request else None


class PaymentPage(_Tolerant):
    items: list[dict[str, Any]] = Field(default_factory=list)
    offset: int | None = None
    limit: int | None = None
    total: int | None = None
    next_cursor: str | None = None
    has_more: bool = False


@dataclass(frozen=True)
class PaymentList:
    """One page of the list endpoint, every item parsed; follow ``next_cursor`` for more."""

    items: list[Payment]
    next_cursor: str | None
    has_more: bool
    total: int | None = None
    limit: int | None = None

    @classmethod
    def from_api(cls, obj: Any) -> PaymentList:
        """Parse a page; a wrong envelope or any malformed item makes the page malformed."""
        if not isinstance(obj, dict):
            raise VoltageMalformedResponse(
                f"expected a payments page object, got {type(obj).__name__}"
            )
        if not isinstance(obj.get("items"), list):
            raise VoltageMalformedResponse("payments page has no 'items' list")
        try:
            page = PaymentPage.model_validate(obj)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise VoltageMalformedResponse(f"payments page has invalid fields: {fields}") from None
        items = []
        for index, item in enumerate(page.items):
            try:
                items.append(Payment.from_api(item))
            except VoltageMalformedResponse as exc:
                raise VoltageMalformedResponse(f"payments page item {index}: {exc}") from None
        return cls(
            items=items,
            next_cursor=page.next_cursor or None,
            has_more=page.has_more,
            total=page.total,
            limit=page.limit,
        )


class HistoryEvent(_Tolerant):
    event_type: str
    error: Any = None
    time: datetime | None = None
    position: int | None = None


@dataclass(frozen=True)
class Invoice:
    """What the watcher needs from a BOLT11 string: its expiry and payment hash."""

    payment_request: str
    payment_hash: str
    amount_msat: int | None
    created_at: datetime
    expiry_seconds: int
    description: str | None
    currency: str

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.expiry_seconds)


class InvalidInvoice(ValueError):
    """The string is not a BOLT11 invoice we can decode."""


def decode_invoice(payment_request: str) -> Invoice:
    try:
        decoded = bolt11.decode(payment_request)
    except Exception as exc:
        raise InvalidInvoice(f"cannot decode BOLT11 invoice: {type(exc).__name__}") from None
    return Invoice(
        payment_request=payment_request,
        payment_hash=str(decoded.payment_hash),
        amount_msat=int(decoded.amount_msat) if decoded.amount_msat is not None else None,
        created_at=datetime.fromtimestamp(decoded.date, tz=UTC),
        expiry_seconds=int(decoded.expiry),
        description=decoded.description,
        currency=str(decoded.currency),
    )
