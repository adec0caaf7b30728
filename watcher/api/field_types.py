"""The field types the API's models and query parameters share: the limits Voltage sets, the
names a filter may take, ids checked against their own shape, RFC 3339 times and strict
booleans, so each rule is written once."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    StringConstraints,
    WithJsonSchema,
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

PaymentEventType = Literal[
    "payment.completed",
    "payment.failed",
    "payment.expired",
    "subscription.disabled",  # these three: admin subscriptions only
    "delivery.dead",
    "subscription.recovered",
]
DeliveryStatus = Literal["pending", "succeeded", "failed", "dead"]
PaymentStatusName = Literal[
    "generating", "receiving", "sending", "approved", "completed", "failed", "expired"
]
EventTypeName = Literal[
    "payment.completed",
    "payment.failed",
    "payment.expired",
    "webhook.test",
    "subscription.disabled",
    "delivery.dead",
    "subscription.recovered",
]

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_LENGTH)]
MetadataValue = Annotated[str, StringConstraints(max_length=MAX_METADATA_LENGTH)]
# Something besides whitespace: Voltage and the client refuse a blank id.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S")
]

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
