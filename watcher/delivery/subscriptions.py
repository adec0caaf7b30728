"""Subscriptions: where to deliver which events, and the secrets that sign them.

Secrets are stored (they must be, to sign) but only ever returned by `create` and
`rotate_secret`; every other read hands out a `Subscription` without them.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.client import Pipeline

from watcher.delivery.signing import generate_secret
from watcher.delivery.subscription_checks import (
    OPERATIONAL_EVENT_TYPES,
    TEST_EVENT_TYPE,
    check_description,
    check_event_types,
    check_metadata_filter,
    check_owner_may_take,
    check_target,
)
from watcher.durability import Durability
from watcher.keys import Keys
from watcher.paging import zset_page
from watcher.timing import iso_timestamp
from watcher.transactions import watched


class SubscriptionNotFound(KeyError):
    """No subscription with that id."""


@dataclass(frozen=True)
class SigningSecret:
    secret: str
    created_at: float
    expires_at: float | None = None  # set on the old secret when a rotation begins


@dataclass
class Subscription:
    id: str
    url: str
    event_types: list[str]
    wallet_id: str | None
    metadata_filter: dict[str, str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: float
    updated_at: float
    secrets: list[SigningSecret] = field(default_factory=list, repr=False)
    app: str = ""  # the app whose key made it (it gets only that app's events); "": admin

    def active_secrets(self, now: float) -> list[str]:
        """Newest first; an old secret keeps signing until its overlap window ends."""
        live = [s for s in self.secrets if s.expires_at is None or s.expires_at > now]
        return [s.secret for s in sorted(live, key=lambda s: s.created_at, reverse=True)]

    def matches(self, event_type: str, payment: Mapping[str, Any] | None) -> bool:
        """Does an event of this type about this Voltage payment go to this subscriber?"""
        if event_type != TEST_EVENT_TYPE and event_type not in self.event_types:
            return False
        if event_type in OPERATIONAL_EVENT_TYPES:
            return True  # about deliveries, not payments: the payment filters do not apply
        if payment is None:
            return not (self.wallet_id or self.metadata_filter)
        if self.wallet_id and payment.get("wallet_id") != self.wallet_id:
            return False
        metadata = payment.get("metadata") or {}
        if not isinstance(metadata, dict):
            return not self.metadata_filter
        return all(str(metadata.get(k)) == v for k, v in self.metadata_filter.items())

    def to_public(self) -> dict[str, Any]:
        """What the API shows: everything but the secrets."""
        return {
            "id": self.id,
            "url": self.url,
            "event_types": self.event_types,
            "filters": {"wallet_id": self.wallet_id, "metadata": self.metadata_filter},
            "description": self.description,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "created_at": iso_timestamp(self.created_at),
            "updated_at": iso_timestamp(self.updated_at),
            "app_id": self.app or None,
        }

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Subscription:
        filters = json.loads(data.get("filters") or "{}")
        return cls(
            id=data["id"],
            url=data["url"],
            event_types=json.loads(data["event_types"]),
            wallet_id=filters.get("wallet_id"),
            metadata_filter=filters.get("metadata") or {},
            description=data.get("description") or None,
            enabled=data.get("enabled") == "1",
            disabled_reason=data.get("disabled_reason") or None,
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            secrets=[SigningSecret(**s) for s in json.loads(data.get("secrets") or "[]")],
            app=data.get("app", ""),
        )


class SubscriptionStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        allow_private: bool,
        durability: Durability | None = None,
    ) -> None:
        self.durability = durability or Durability()
        self.redis = client
        self.keys = keys
        self.allow_private = allow_private

    def _save(self, sub: Subscription) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._write(pipe, sub)
        pipe.execute()
        self._replicate(sub)

    def _write(self, pipe: Pipeline, sub: Subscription) -> None:
        fields = {
            "id": sub.id,
            "url": sub.url,
            "event_types": json.dumps(sub.event_types),
            "filters": json.dumps({"wallet_id": sub.wallet_id, "metadata": sub.metadata_filter}),
            "description": sub.description or "",
            "enabled": "1" if sub.enabled else "0",
            "disabled_reason": sub.disabled_reason or "",
            "created_at": repr(sub.created_at),
            "updated_at": repr(sub.updated_at),
            "secrets": json.dumps([s.__dict__ for s in sub.secrets]),
            "app": sub.app,
        }
        pipe.hset(self.keys.subscription(sub.id), mapping=cast(Any, fields))
        pipe.zadd(self.keys.subscriptions_index, {sub.id: sub.created_at})

    def _replicate(self, sub: Subscription) -> None:
        if self.durability.replicas > 0:
            # A write on the WAIT's own connection, so the WAIT covers it (and all before it).
            check = self.redis.pipeline(transaction=False)
            check.hset(self.keys.subscription(sub.id), "replicated_at", repr(time.time()))
            self.durability.wait_in(check)
            self.durability.check(check.execute(), f"subscription {sub.id}")

    def _modify(self, subscription_id: str, change: Callable[[Subscription], None]) -> Subscription:
        """Read, `change`, write, under WATCH: two API processes changing one subscription
        (an edit and a rotation) both land, and one deleted meanwhile is not written back."""
        name = self.keys.subscription(subscription_id)

        def run(pipe: Pipeline) -> Subscription:
            data = cast(dict[str, str], pipe.hgetall(name))
            if not data:
                raise SubscriptionNotFound(subscription_id)
            sub = Subscription.from_hash(data)
            change(sub)
            pipe.multi()
            self._write(pipe, sub)
            return sub

        sub = watched(self.redis, run, name)
        self._replicate(sub)
        return sub

    def create(
        self,
        *,
        url: str,
        event_types: Iterable[str] | None = None,
        wallet_id: str | None = None,
        metadata_filter: Mapping[str, str] | None = None,
        description: str | None = None,
        enabled: bool = True,
        now: float | None = None,
        owner: str = "",
    ) -> tuple[Subscription, str]:
        """Validate everything first, then store; returns the subscription and its secret."""
        at = time.time() if now is None else now
        sub = Subscription(
            id=f"sub_{secrets.token_hex(12)}",
            url=check_target(url, self.allow_private),
            event_types=check_event_types(event_types),
            wallet_id=wallet_id or None,
            metadata_filter=check_metadata_filter(metadata_filter),
            description=check_description(description),
            enabled=enabled,
            disabled_reason=None,
            created_at=at,
            updated_at=at,
            app=owner,
        )
        check_owner_may_take(sub.event_types, owner)
        secret = generate_secret()
        sub.secrets = [SigningSecret(secret=secret, created_at=at)]
        self._save(sub)
        return sub, secret

    def get(self, subscription_id: str) -> Subscription:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.subscription(subscription_id)))
        if not data:
            raise SubscriptionNotFound(subscription_id)
        return Subscription.from_hash(data)

    def page(self, *, offset: int = 0, limit: int = 100) -> list[Subscription]:
        ids = cast(
            list[str],
            self.redis.zrange(self.keys.subscriptions_index, offset, offset + limit - 1),
        )
        return [sub for sub in self.get_many(ids) if sub is not None]

    def get_many(self, subscription_ids: Sequence[str]) -> list[Subscription | None]:
        """Several subscriptions in one round trip, in the order asked (None where missing)."""
        pipe = self.redis.pipeline(transaction=False)
        for sub_id in subscription_ids:
            pipe.hgetall(self.keys.subscription(sub_id))
        found = cast(list[dict[str, str]], pipe.execute())
        return [Subscription.from_hash(data) if data else None for data in found]

    def cursor_page(
        self, *, cursor: str | None, limit: int, keep: Callable[[Subscription], bool]
    ) -> tuple[list[Subscription], str | None]:
        """Subscriptions oldest first, filtered by `keep`; raises CursorError."""
        return zset_page(
            self.redis,
            self.keys.subscriptions_index,
            cursor=cursor,
            limit=limit,
            newest_first=False,
            load=self.get_many,
            keep=keep,
        )

    def count(self) -> int:
        return int(self.redis.zcard(self.keys.subscriptions_index))

    def all_enabled(self) -> list[Subscription]:
        """Every enabled subscription, in one round trip (fan-out reads them per batch)."""
        ids = cast(list[str], self.redis.zrange(self.keys.subscriptions_index, 0, -1))
        return [sub for sub in self.get_many(ids) if sub is not None and sub.enabled]

    def update(
        self,
        subscription_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        wallet_id: str | None = None,
        metadata_filter: Mapping[str, str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        now: float | None = None,
    ) -> Subscription:
        """Change only what is given; all of it is validated before anything is written."""
        checked_url = check_target(url, self.allow_private) if url is not None else None
        checked_types = check_event_types(event_types) if event_types is not None else None
        checked_filter = (
            check_metadata_filter(metadata_filter) if metadata_filter is not None else None
        )
        checked_description = check_description(description) if description is not None else None

        def change(sub: Subscription) -> None:
            if checked_url is not None:
                sub.url = checked_url
            if checked_types is not None:
                check_owner_may_take(checked_types, sub.app)
                sub.event_types = checked_types
            if wallet_id is not None:
                sub.wallet_id = wallet_id or None
            if checked_filter is not None:
                sub.metadata_filter = checked_filter
            if description is not None:
                sub.description = checked_description or None
            if enabled is not None:
                sub.enabled = enabled
                sub.disabled_reason = None if enabled else "disabled by an operator"
            sub.updated_at = time.time() if now is None else now

        sub = self._modify(subscription_id, change)
        if enabled:
            self.note_success(sub.id)
        return sub

    def disable(self, subscription_id: str, reason: str, now: float | None = None) -> Subscription:
        def change(sub: Subscription) -> None:
            sub.enabled = False
            sub.disabled_reason = reason
            sub.updated_at = time.time() if now is None else now

        return self._modify(subscription_id, change)

    def note_failure(self, subscription_id: str, now: float) -> float:
        """Remember when this subscriber started failing (kept until a success)."""
        key = self.keys.subscription(subscription_id)
        self.redis.hsetnx(key, "failing_since", repr(now))
        since = cast(str | None, self.redis.hget(key, "failing_since"))
        return float(since) if since else now

    def note_success(self, subscription_id: str) -> None:
        self.redis.hdel(self.keys.subscription(subscription_id), "failing_since")

    def delete(self, subscription_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.subscription(subscription_id))
        pipe.zrem(self.keys.subscriptions_index, subscription_id)
        if not pipe.execute()[0]:
            raise SubscriptionNotFound(subscription_id)

    def rotate_secret(
        self, subscription_id: str, *, overlap: float, now: float | None = None
    ) -> tuple[Subscription, str]:
        """A new secret signs from now on; the previous ones keep signing for `overlap`
        seconds so receivers can switch without rejecting a single delivery."""
        at = time.time() if now is None else now
        secret = generate_secret()

        def change(sub: Subscription) -> None:
            kept = [
                SigningSecret(
                    s.secret, s.created_at, min(s.expires_at or at + overlap, at + overlap)
                )
                for s in sub.secrets
                if s.expires_at is None or s.expires_at > at
            ]
            sub.secrets = [SigningSecret(secret=secret, created_at=at), *kept]
            sub.updated_at = at

        return self._modify(subscription_id, change), secret
