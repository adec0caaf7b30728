"""Request and response bodies of the HTTP API (pydantic), so /openapi.json says what we do.

Request models forbid unknown fields (a typo is a 422 naming it, not a silently ignored
option) and refuse lone UTF-16 surrogates, which JSON can carry but Redis cannot store.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from watcher import ids

# 21 million bitcoin in millisatoshis: no Lightning amount can be larger.
MAX_MSATS = 2_100_000_000_000_000_000
MAX_EXPIRATION = 86_400
MAX_METADATA_ENTRIES = 50
MAX_METADATA_LENGTH = 256
MAX_FILTER_ENTRIES = 20
MAX_DESCRIPTION = 639  # what fits a BOLT11 `d` field (Voltage counts UTF-8 bytes)
MAX_SUBSCRIPTION_DESCRIPTION = 500
MAX_URL_LENGTH = 2048
MAX_ID_LENGTH = 128

PaymentEventType = Literal["payment.completed", "payment.failed", "payment.expired"]
DeliveryStatus = Literal["pending", "succeeded", "failed", "dead"]
PaymentStatusName = Literal[
    "generating", "receiving", "sending", "approved", "completed", "failed", "expired"
]
EventTypeName = Literal["payment.completed", "payment.failed", "payment.expired", "webhook.test"]

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_LENGTH)]
MetadataValue = Annotated[str, StringConstraints(max_length=MAX_METADATA_LENGTH)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]

# Date, time, optional seconds and fraction, optional zone (AwareDatetime names a missing one).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)


def _rfc3339_only(value: Any) -> Any:
    """pydantic would also take unix seconds ("0.5") for a datetime; the API takes RFC 3339."""
    if isinstance(value, str) and _RFC3339.fullmatch(value.strip()):
        return value.strip()
    raise ValueError("expected an RFC 3339 date-time with a time zone, e.g. 2026-11-25T19:00:00Z")


def _strict_bool_text(value: Any) -> Any:
    """Query strings: only `true` or `false` (not `yes`, `1`, `on`...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("expected true or false")


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]
QueryBool = Annotated[bool, BeforeValidator(_strict_bool_text)]


def _id_schema(kind: ids.IdKind) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "pattern": kind.pattern, "description": f"{kind.description}."}
    )


def _stream_cursor(value: str) -> str:
    ids.parse_stream_id(value)
    return value


# Ids in paths and queries: checked against their own shape (watcher/ids.py) before any
# route splices them into a Redis key; a malformed one is a 422 naming the parameter.
PaymentIdText = Annotated[str, AfterValidator(ids.PAYMENT.check), _id_schema(ids.PAYMENT)]
SubscriptionIdText = Annotated[
    str, AfterValidator(ids.SUBSCRIPTION.check), _id_schema(ids.SUBSCRIPTION)
]
DeliveryIdText = Annotated[str, AfterValidator(ids.DELIVERY.check), _id_schema(ids.DELIVERY)]
EventIdText = Annotated[str, AfterValidator(ids.EVENT.check), _id_schema(ids.EVENT)]
StreamCursor = Annotated[
    str,
    AfterValidator(_stream_cursor),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ids.STREAM_ID_PATTERN,
            "description": "The `next_cursor` of the previous page.",
        }
    ),
]


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, BaseModel):
        return False  # checked by its own validators
    return False


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        if _has_surrogate(value):
            raise ValueError("must be valid Unicode text (no lone surrogates)")
        return value


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


class PaymentCreate(RequestModel):
    amount_msats: StrictInt | None = Field(
        ge=0,
        le=MAX_MSATS,
        description="Amount in millisatoshis; `null` creates an any-amount invoice.",
    )
    description: str | None = Field(
        default=None,
        max_length=MAX_DESCRIPTION,
        description=(
            f"The invoice description (memo): at most {MAX_DESCRIPTION} bytes of UTF-8, what "
            "fits a BOLT11 invoice (fewer characters outside ASCII: `é` takes 2 bytes)."
        ),
        json_schema_extra={"x-max-utf8-bytes": MAX_DESCRIPTION},
    )
    expiration: StrictInt | None = Field(
        default=None, ge=1, le=MAX_EXPIRATION, description="Invoice lifetime in seconds."
    )
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None,
        max_length=MAX_METADATA_ENTRIES,
        description="Stored on the Voltage payment; subscriptions can filter on it.",
    )
    wallet_id: Identifier | None = Field(
        default=None, description="The receiving wallet; default VOLTAGE_WALLET_ID."
    )
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description=(
            "Your own id for this payment. Repeating a create with the same client_id "
            "returns the same payment instead of making a second invoice."
        ),
    )

    @field_validator("description")
    @classmethod
    def _description_fits_an_invoice(cls, value: str | None) -> str | None:
        """Voltage counts bytes, not characters: 400 `é` pass max_length and fail there."""
        size = len(value.encode("utf-8", "surrogatepass")) if value is not None else 0
        if size > MAX_DESCRIPTION:
            raise ValueError(f"at most {MAX_DESCRIPTION} bytes of UTF-8 fit an invoice, got {size}")
        return value


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


class WatchRequest(RequestModel):
    payment_id: UUID = Field(description="The id (a UUID) of a payment on Voltage.")


# --- subscriptions --------------------------------------------------------------------------

WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]
FilterMetadata = dict[MetadataKey, MetadataValue]


class SubscriptionFilters(RequestModel):
    wallet_id: Identifier | None = Field(default=None, description="Only payments of this wallet.")
    metadata: FilterMetadata | None = Field(
        default=None,
        max_length=MAX_FILTER_ENTRIES,
        description="Only payments whose metadata has all of these key/value pairs.",
    )


class SubscriptionCreate(RequestModel):
    url: WebhookUrl = Field(description="Where webhooks are POSTed (http or https).")
    event_types: list[PaymentEventType] | None = Field(
        default=None, min_length=1, description="Default: every payment event type."
    )
    filters: SubscriptionFilters | None = None
    description: str | None = Field(default=None, max_length=MAX_SUBSCRIPTION_DESCRIPTION)
    enabled: StrictBool = True


def _drop_null(schema: dict[str, Any]) -> None:
    """OpenAPI for an optional field that may be omitted but not sent as null."""
    variants = schema.pop("anyOf", None)
    if isinstance(variants, list):
        kept = [v for v in variants if v != {"type": "null"}]
        if len(kept) == 1 and isinstance(kept[0], dict):
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


class SubscriptionUpdate(RequestModel):
    """Only the fields given change. `null` clears `description` and filter values; `url`,
    `event_types`, `filters` and `enabled` may be omitted but not null."""

    url: WebhookUrl | None = Field(default=None, json_schema_extra=_drop_null)
    event_types: list[PaymentEventType] | None = Field(
        default=None, min_length=1, json_schema_extra=_drop_null
    )
    filters: SubscriptionFilters | None = Field(default=None, json_schema_extra=_drop_null)
    description: str | None = Field(default=None, max_length=MAX_SUBSCRIPTION_DESCRIPTION)
    enabled: StrictBool | None = Field(default=None, json_schema_extra=_drop_null)

    @field_validator("url", "event_types", "filters", "enabled", mode="after")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for values sent: an explicit null is refused, naming the field.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


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


class RecoverRequest(RequestModel):
    since: Rfc3339 = Field(description="RFC 3339, with a time zone.")
    until: Rfc3339 = Field(description="RFC 3339, with a time zone.")


class RecoverResult(BaseModel):
    subscription_id: str
    count: int = Field(description="How many failed or dead deliveries are re-sent.")
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


class EventPage(BaseModel):
    items: list[EventOut]
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
