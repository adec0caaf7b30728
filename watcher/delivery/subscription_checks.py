"""What a subscription may hold: its event types (and who may take which), its URL (the SSRF
guard), its filters and description; every refusal an InvalidSubscription naming the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from watcher.delivery.ssrf import UnsafeURLError, check_url

PAYMENT_EVENT_TYPES = ("payment.completed", "payment.failed", "payment.expired")
TEST_EVENT_TYPE = "webhook.test"
# The watcher's notices about its own deliveries (delivery/notices.py): admin subscriptions only.
OPERATIONAL_EVENT_TYPES = ("subscription.disabled", "delivery.dead", "subscription.recovered")
SUBSCRIBABLE = PAYMENT_EVENT_TYPES + OPERATIONAL_EVENT_TYPES
MAX_DESCRIPTION = 500
MAX_METADATA_FILTERS = 20


class InvalidSubscription(ValueError):
    """Bad input for a subscription; `field` names what is wrong. Nothing was changed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_event_types(event_types: Iterable[str] | None) -> list[str]:
    if event_types is None:
        return list(PAYMENT_EVENT_TYPES)
    chosen = list(dict.fromkeys(event_types))
    if not chosen:
        raise InvalidSubscription("event_types", "choose at least one event type")
    unknown = [t for t in chosen if t not in SUBSCRIBABLE]
    if unknown:
        raise InvalidSubscription(
            "event_types",
            f"unknown event type(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(SUBSCRIBABLE)}",
        )
    return chosen


def check_owner_may_take(event_types: Iterable[str], owner: str) -> None:
    """Operational events are about every app's deliveries: an app's subscription cannot
    take them."""
    if owner and set(event_types) & set(OPERATIONAL_EVENT_TYPES):
        raise InvalidSubscription(
            "event_types",
            f"{', '.join(OPERATIONAL_EVENT_TYPES)} go to admin subscriptions only",
        )


def check_target(url: str, allow_private: bool) -> str:
    try:
        check_url(url, allow_private=allow_private)
    except UnsafeURLError as exc:
        raise InvalidSubscription("url", str(exc)) from None
    return url


def check_metadata_filter(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if not metadata:
        return {}
    if len(metadata) > MAX_METADATA_FILTERS:
        raise InvalidSubscription(
            "filters.metadata", f"at most {MAX_METADATA_FILTERS} key/value pairs"
        )
    checked = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidSubscription("filters.metadata", "keys and values must be strings")
        if len(key) > 256 or len(value) > 256:
            raise InvalidSubscription("filters.metadata", "keys and values up to 256 characters")
        checked[key] = value
    return checked


def check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidSubscription("description", f"at most {MAX_DESCRIPTION} characters")
    return description
