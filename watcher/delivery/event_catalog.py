"""The events a subscriber receives, as pydantic models: one JSON Schema per event type, served
at `GET /v1/event-types` and in the OpenAPI document's `webhooks`, so a receiver can check a
body (or generate a type) instead of learning it from an example.

Every body carries `version`, the version of its schema. A version only ever gains optional
fields; anything else is a new version, and a subscription may pin the one it understands.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from watcher.engine.records import EVENT_SCHEMA_VERSION

SCHEMA_VERSIONS = (EVENT_SCHEMA_VERSION,)

# Voltage's PaymentStatus: a watched payment may be a receive or a send.
PaymentStatusName = Literal[
    "generating", "receiving", "sending", "approved", "completed", "expired", "failed"
]
FinalStatusName = Literal["completed", "expired", "failed"]


class _Event(BaseModel):
    # Receivers must accept fields a later minor change adds.
    model_config = ConfigDict(extra="allow")

    timestamp: str = Field(description="When the watcher saw it (RFC 3339, UTC, milliseconds).")
    version: int = Field(description="The schema version of this body.", ge=1)


class PaymentEventData(BaseModel):
    model_config = ConfigDict(extra="allow")

    payment_id: str = Field(description="Voltage's payment id (a UUID).")
    previous_status: PaymentStatusName | None = Field(
        description="The status the watcher saw before; null when it first saw it final."
    )
    status: FinalStatusName = Field(description="The final status.")
    payment: dict[str, Any] = Field(
        description="Voltage's payment object as read when the change was seen (its own API "
        "documents the fields: id, status, wallet_id, direction, data, ...)."
    )


class PaymentCompleted(_Event):
    """A receive was paid: ship the goods, credit the account."""

    type: Literal["payment.completed"]
    data: PaymentEventData


class PaymentFailed(_Event):
    """Voltage gave up on the payment."""

    type: Literal["payment.failed"]
    data: PaymentEventData


class PaymentExpired(_Event):
    """The invoice expired unpaid."""

    type: Literal["payment.expired"]
    data: PaymentEventData


class TestEventData(BaseModel):
    model_config = ConfigDict(extra="allow")

    subscription_id: str = Field(description="The subscription the test was sent to.")
    message: str


class WebhookTest(_Event):
    """Sent on request (`POST /v1/subscriptions/{id}/test`), to one subscription only."""

    type: Literal["webhook.test"]
    data: TestEventData


class _Notice(BaseModel):
    model_config = ConfigDict(extra="allow")

    subscription_id: str
    app_id: str | None = Field(description="The subscription's app; null: an admin's.")


class DisabledData(_Notice):
    reason: str = Field(description="Why: a 410, or failing without a success for too long.")
    disabled_at: str


class SubscriptionDisabled(_Event):
    """A subscription was disabled by the watcher; nothing more goes to it until it is
    enabled again. Admin subscriptions only."""

    type: Literal["subscription.disabled"]
    data: DisabledData


class DeadData(_Notice):
    delivery_id: str
    event_id: str = Field(description="The event that was not delivered (its webhook-id).")
    event_type: str
    payment_id: str | None
    attempts: int
    last_status_code: int | None
    last_error: str | None


class DeliveryDead(_Event):
    """A delivery ran out of attempts (or met a 410); `POST /v1/deliveries/{id}/redeliver`
    or recover sends it again. Admin subscriptions only."""

    type: Literal["delivery.dead"]
    data: DeadData


class RecoveredData(_Notice):
    failing_since: str = Field(description="When its failures began.")
    recovered_at: str


class SubscriptionRecovered(_Event):
    """A subscriber that was failing answered 2xx again. Admin subscriptions only."""

    type: Literal["subscription.recovered"]
    data: RecoveredData


EVENT_MODELS: dict[str, type[_Event]] = {
    "payment.completed": PaymentCompleted,
    "payment.failed": PaymentFailed,
    "payment.expired": PaymentExpired,
    "webhook.test": WebhookTest,
    "subscription.disabled": SubscriptionDisabled,
    "delivery.dead": DeliveryDead,
    "subscription.recovered": SubscriptionRecovered,
}


def schema_of(event_type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12, as pydantic writes it) of one event type's body."""
    return EVENT_MODELS[event_type].model_json_schema()


def describe(event_type: str) -> str:
    return (EVENT_MODELS[event_type].__doc__ or "").strip()
