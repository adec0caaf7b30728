"""Subscriptions on a real Redis: validation that changes nothing, secrets shown once, rotation."""

from __future__ import annotations

import base64
import uuid

import pytest
import redis

from watcher.delivery.subscription_checks import PAYMENT_EVENT_TYPES, InvalidSubscription
from watcher.delivery.subscriptions import SubscriptionNotFound, SubscriptionStore
from watcher.keys import Keys

NOW = 1_800_000_000.0


@pytest.fixture
def subs(redis_client: redis.Redis) -> SubscriptionStore:
    return SubscriptionStore(redis_client, Keys(f"s{uuid.uuid4().hex[:8]}"), allow_private=True)


def test_create_returns_the_secret_once(subs: SubscriptionStore) -> None:
    sub, secret = subs.create(url="http://127.0.0.1:9999/hook", description="shop", now=NOW)
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    assert sub.event_types == list(PAYMENT_EVENT_TYPES)
    shown = subs.get(sub.id).to_public()
    assert secret not in repr(shown)
    assert "secret" not in shown
    assert shown["enabled"] is True
    assert [s.id for s in subs.page()] == [sub.id]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://127.0.0.1/x", "event_types": ["payment.paid"]}, "event_types"),
        ({"url": "http://127.0.0.1/x", "event_types": []}, "event_types"),
        ({"url": "http://127.0.0.1/x", "description": "x" * 501}, "description"),
        ({"url": "http://127.0.0.1/x", "metadata_filter": {"k": "v" * 300}}, "filters.metadata"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    subs: SubscriptionStore, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidSubscription) as info:
        subs.create(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")
    assert subs.page() == []


def test_private_addresses_are_refused_unless_allowed(redis_client: redis.Redis) -> None:
    strict = SubscriptionStore(redis_client, Keys(f"s{uuid.uuid4().hex[:8]}"), allow_private=False)
    with pytest.raises(InvalidSubscription) as info:
        strict.create(url="http://127.0.0.1:8080/hook")
    assert info.value.field == "url"
    assert "WATCHER_WEBHOOK_ALLOW_PRIVATE" in str(info.value)


def test_update_validates_before_writing(subs: SubscriptionStore) -> None:
    sub, _ = subs.create(url="http://127.0.0.1:9999/a", now=NOW)
    with pytest.raises(InvalidSubscription):
        subs.update(sub.id, url="http://127.0.0.1:9999/b", event_types=["nope"])
    assert subs.get(sub.id).url == "http://127.0.0.1:9999/a"
    updated = subs.update(sub.id, event_types=["payment.completed"], enabled=False, now=NOW + 1)
    assert updated.event_types == ["payment.completed"]
    assert not updated.enabled
    assert updated.disabled_reason == "disabled by an operator"
    assert subs.get(sub.id).updated_at == NOW + 1


def test_rotation_overlaps_then_retires_the_old_secret(subs: SubscriptionStore) -> None:
    sub, first = subs.create(url="http://127.0.0.1:9999/a", now=NOW)
    rotated, second = subs.rotate_secret(sub.id, overlap=3600, now=NOW + 10)
    assert second != first
    assert rotated.active_secrets(NOW + 11) == [second, first]
    assert subs.get(sub.id).active_secrets(NOW + 3609) == [second, first]
    assert subs.get(sub.id).active_secrets(NOW + 3611) == [second]


def test_filters_decide_which_events_match(subs: SubscriptionStore) -> None:
    sub, _ = subs.create(
        url="http://127.0.0.1:9999/a",
        event_types=["payment.completed"],
        wallet_id="w1",
        metadata_filter={"shop": "berlin"},
    )
    paid = {"wallet_id": "w1", "metadata": {"shop": "berlin", "order": "1"}}
    assert sub.matches("payment.completed", paid)
    assert not sub.matches("payment.expired", paid)
    assert not sub.matches("payment.completed", {**paid, "wallet_id": "w2"})
    assert not sub.matches("payment.completed", {"wallet_id": "w1", "metadata": {"shop": "x"}})


def test_delete_and_not_found(subs: SubscriptionStore) -> None:
    sub, _ = subs.create(url="http://127.0.0.1:9999/a")
    subs.delete(sub.id)
    with pytest.raises(SubscriptionNotFound):
        subs.get(sub.id)
    with pytest.raises(SubscriptionNotFound):
        subs.delete(sub.id)
