"""Request bodies of the HTTP API (pydantic), so /openapi.json says what we accept.

They forbid unknown fields (a typo is a 422 naming it, not a silently ignored option) and
refuse lone UTF-16 surrogates, which JSON can carry but Redis cannot store.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)

from watcher.api.field_types import (
    MAX_DESCRIPTION,
    MAX_EXPIRATION,
    MAX_FILTER_ENTRIES,
    MAX_METADATA_ENTRIES,
    MAX_MSATS,
    MAX_SUBSCRIPTION_DESCRIPTION,
    MAX_URL_LENGTH,
    EventTypeName,
    Identifier,
    MetadataKey,
    MetadataValue,
    PaymentEventType,
    Rfc3339,
)


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


class RecoverRequest(RequestModel):
    since: Rfc3339 = Field(description="RFC 3339, with a time zone.")
    until: Rfc3339 = Field(description="RFC 3339, with a time zone.")
    statuses: list[Literal["failed", "dead"]] | None = Field(
        None, min_length=1, description="Only deliveries in these statuses (default: both)."
    )
    event_types: list[EventTypeName] | None = Field(
        None, min_length=1, description="Only deliveries of these event types (default: all)."
    )
    dry_run: StrictBool = Field(
        False, description="Only count what would be re-sent, by status; send nothing."
    )


AppName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


class AppCreate(RequestModel):
    name: AppName = Field(description="Lower-case letters, digits, '.', '_', '-'; unique.")


class KeyCreate(RequestModel):
    app: AppName | None = Field(None, description="The app the key acts for.")
    admin: StrictBool = Field(False, description="An admin key (sees and changes everything).")
    scope: Literal["read", "write"] = Field("write", description="`read` cannot change.")
