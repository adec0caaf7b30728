"""Response bodies of the HTTP API (pydantic), so /openapi.json says what we answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- errors ---------------------------------------------------------------------------------


class ErrorField(BaseModel):
    field: str = Field(description="Where the problem is, e.g. `body.amount_msats`.")
    message: str


class ErrorInfo(BaseModel):
    type: str = Field(description="Machine-readable kind, e.g. `validation_error`.")
    detail: str = Field(description="What is wrong, for a person.")
    fields: list[ErrorField] | None = Field(
        default=None, description="Present on validation errors: each offending field."
    )


class ErrorResponse(BaseModel):
    """The one shape of every 4xx and 5xx answer."""

    error: ErrorInfo


# --- payments -------------------------------------------------------------------------------


class PaymentOut(BaseModel):
    id: str
    status: str
    watching: bool
    source: str
    wallet_id: str | None
    payment_request: str | None = Field(description="The BOLT11 invoice; null until ready.")
    payment_hash: str | None
    amount_msats: int | None
    description: str | None
    metadata: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    expires_at: str | None
    watched_at: str | None
    last_poll_at: str | None
    poll_count: int
    error_count: int
    last_error: str | None
    stopped_reason: str | None
    stopped_at: str | None
    final_at: str | None
    event_id: str | None
    version: int
    app_id: str | None = Field(None, description="The app that owns it; null: an admin's.")


class Transition(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_status: str | None = Field(alias="from")
    to: str
    at: str
    event_id: str | None


class PaymentDetail(PaymentOut):
    transitions: list[Transition]
    next_poll_at: str | None = Field(description="When the next poll is due (null if none).")


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


# --- subscriptions --------------------------------------------------------------------------


class FiltersOut(BaseModel):
    wallet_id: str | None
    metadata: dict[str, str]


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    filters: FiltersOut
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str
    app_id: str | None = Field(None, description="The app that owns it; null: an admin's.")


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(
        description="The signing secret (`whsec_...`). Shown only here: store it now."
    )


class RotatedSecret(SubscriptionWithSecret):
    previous_secrets_expire_at: str | None = Field(
        description="Until then the previous secret(s) sign too (null: there were none)."
    )


class SubscriptionPage(BaseModel):
    items: list[SubscriptionOut]
    next_cursor: str | None


class TestEventResult(BaseModel):
    event_id: str
    subscription_id: str
    delivery_id: str | None = Field(description="The delivery to follow at /v1/deliveries.")


class RecoverResult(BaseModel):
    subscription_id: str
    dry_run: bool = Field(description="True: nothing was sent, these are what would be.")
    count: int = Field(description="How many failed or dead deliveries are (or would be) re-sent.")
    by_status: dict[str, int] = Field(description="That count by status: `failed`, `dead`.")
    delivery_ids: list[str]


# --- deliveries and events ------------------------------------------------------------------


class Attempt(BaseModel):
    model_config = ConfigDict(extra="allow")

    attempt: int
    at: str
    status_code: int | None
    latency_ms: float | None
    response_body: str | None
    error: str | None
    refused_by_ssrf_guard: bool = False


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    subscription_id: str
    payment_id: str | None
    status: str
    attempts: int
    created_at: str | None
    updated_at: str | None
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    succeeded_at: str | None
    app_id: str | None = Field(None, description="The app that owns it; null: an admin's.")


class DeliveryDetail(DeliveryOut):
    attempt_log: list[Attempt]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: str = Field(description="The event id, sent as `webhook-id` with every delivery.")
    type: str
    payment_id: str | None
    subscription_id: str | None = Field(description="Set on `webhook.test` events only.")
    created_at: str
    body: dict[str, Any] = Field(description="The exact JSON every delivery carries, parsed.")
    app_id: str | None = Field(None, description="The app that owns it; null: an admin's.")


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


# --- audit ---------------------------------------------------------------------------------


class AuditEntryOut(BaseModel):
    id: str = Field(description="The entry's id; pass it as `cursor` to read older ones.")
    at: str
    actor: str = Field(
        description="`tok_` + 16 hex digits of the API token's SHA-256, or `cli:<user>`."
    )
    action: str
    target: str = Field(description="The id of the payment, subscription or delivery.")
    detail: str = Field(description="Names and counts only: never a URL, body or secret.")


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


# --- ingress and health ---------------------------------------------------------------------


class IngressResult(BaseModel):
    status: Literal["accepted", "ignored"]
    payment_id: str | None
    action: Literal["poll", "watch", "none"]
    reason: str | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    redis: Literal["ok"]


class AppOut(BaseModel):
    id: str
    name: str
    created_at: str


class KeyOut(BaseModel):
    id: str = Field(description="Names the key in the audit log; not a secret.")
    app: str | None = Field(description="The app's name; null for an admin key.")
    admin: bool
    scope: str
    created_at: str | None
    rotated_at: str | None
    revoked_at: str | None


class KeyWithSecret(KeyOut):
    key: str = Field(description="The key itself, shown only here: store it now.")


class AppDetail(AppOut):
    keys: list[KeyOut]


class AppPage(BaseModel):
    items: list[AppOut]


class KeyPage(BaseModel):
    items: list[KeyOut]


class AppDeleted(BaseModel):
    app: AppOut
    revoked_keys: list[str]
    disabled_subscriptions: list[str]
