"""Apps (tenants) and their API keys, in Redis.

A key is shown once, when made or rotated; Redis keeps only its SHA-256 (a key is 256 random
bits, so a fast hash is enough: there is nothing to guess). A request is authenticated with
one read of the digest's hash, and a key is revoked by deleting that hash: the next request
is refused, on every API process, with no restart and no cache to wait for.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.client import Pipeline

from watcher.access.principal import Principal, Scope
from watcher.delivery.subscriptions import Subscription, SubscriptionNotFound, SubscriptionStore
from watcher.keys import Keys
from watcher.lua import scripts_for
from watcher.timing import iso_timestamp
from watcher.transactions import watched

KEY_PREFIX = "vwk_"
_APP_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class TenantError(ValueError):
    """A change that cannot be made; the message says why (for a 4xx or a CLI error)."""


class AppNotFound(TenantError):
    pass


class KeyNotFound(TenantError):
    pass


def check_app_name(name: str) -> str:
    if not _APP_NAME.fullmatch(name):
        raise TenantError(
            "an app name is 1 to 63 characters: lower-case letters, digits, '.', '_' or '-', "
            "beginning with a letter or digit"
        )
    return name


def digest_of(presented: bytes) -> str:
    return hashlib.sha256(presented).hexdigest()


@dataclass(frozen=True)
class App:
    id: str
    name: str
    created_at: float

    def to_public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created_at": iso_timestamp(self.created_at)}


@dataclass(frozen=True)
class ApiKey:
    id: str
    app_id: str  # "" for an admin key
    scope: Scope
    created_at: float
    rotated_at: float | None
    revoked_at: float | None

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> ApiKey:
        return cls(
            id=data["id"],
            app_id=data.get("app_id", ""),
            scope=Scope(data.get("scope", Scope.WRITE)),
            created_at=float(data.get("created_at", 0)),
            rotated_at=float(data["rotated_at"]) if data.get("rotated_at") else None,
            revoked_at=float(data["revoked_at"]) if data.get("revoked_at") else None,
        )

    def to_public(self, app_name: str | None) -> dict[str, Any]:
        def at(value: float | None) -> str | None:
            return iso_timestamp(value) if value is not None else None

        return {
            "id": self.id,
            "app": app_name,
            "admin": not self.app_id,
            "scope": self.scope.value,
            "created_at": at(self.created_at),
            "rotated_at": at(self.rotated_at),
            "revoked_at": at(self.revoked_at),
        }


class TenantStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._authenticate = scripts_for(client).authenticate

    # --- apps ----------------------------------------------------------------------------------
    def create_app(self, name: str, now: float) -> App:
        app = App(id=f"app_{secrets.token_hex(8)}", name=check_app_name(name), created_at=now)
        if not self.redis.set(self.keys.app_name(name), app.id, nx=True):
            raise TenantError(f"an app named {name!r} exists already")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.app(app.id), mapping={"id": app.id, "name": name, "created_at": now})
        pipe.zadd(self.keys.apps_index, {app.id: now})
        pipe.execute()
        return app

    def app_named(self, name: str) -> App:
        app_id = cast(str | None, self.redis.get(self.keys.app_name(name)))
        app = self.app_by_id(app_id) if app_id else None
        if app is None:
            raise AppNotFound(f"no app named {name!r}")
        return app

    def app_by_id(self, app_id: str) -> App | None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.app(app_id)))
        if not data:
            return None
        return App(id=data["id"], name=data["name"], created_at=float(data["created_at"]))

    def apps(self) -> list[App]:
        ids = cast(list[str], self.redis.zrange(self.keys.apps_index, 0, -1))
        return [app for app in map(self.app_by_id, ids) if app is not None]

    def app_names(self) -> dict[str, str]:
        """App id -> name, for showing owners."""
        return {app.id: app.name for app in self.apps()}

    def delete_app(self, name: str, now: float) -> tuple[App, list[str]]:
        """The app goes first, so from then on its keys are refused (`authenticate` checks the
        app) and no key can be made for it; then its keys are revoked, including one made
        while this ran. Its name is free again: a new app of that name is a new tenant."""
        app = self.app_named(name)

        def remove(pipe: Pipeline) -> None:
            if pipe.get(self.keys.app_name(name)) != app.id:  # deleted (and remade) meanwhile
                raise AppNotFound(f"no app named {name!r}")
            pipe.multi()
            pipe.delete(self.keys.app(app.id), self.keys.app_name(name))
            pipe.zrem(self.keys.apps_index, app.id)

        watched(self.redis, remove, self.keys.app_name(name))
        revoked = [k.id for k in self.keys_of(app.id) if k.revoked_at is None]
        for key_id in revoked:
            self.revoke(key_id, now)
        return app, revoked

    # --- keys ----------------------------------------------------------------------------------
    def create_key(self, app_id: str, scope: Scope, now: float) -> tuple[ApiKey, str]:
        """A key for an app, or an admin key when `app_id` is ""; returns it and its secret.
        Written only if the app still exists when it is written (WATCH), so a key made while
        its app is deleted is either refused here or seen, and revoked, by the deletion."""
        key = ApiKey(f"key_{secrets.token_hex(8)}", app_id, scope, now, None, None)
        guarded = [self.keys.app(app_id)] if app_id else []

        def write(pipe: Pipeline) -> str:
            if app_id and not pipe.exists(self.keys.app(app_id)):
                raise AppNotFound(f"no app with id {app_id!r}")
            pipe.multi()
            secret, digest = self._new_secret(pipe, key)
            pipe.hset(
                self.keys.api_key(key.id),
                mapping={"id": key.id, "app_id": app_id, "scope": scope.value,
                         "created_at": repr(now), "digest": digest},
            )  # fmt: skip
            pipe.zadd(self.keys.api_keys_index, {key.id: now})
            return secret

        secret = watched(self.redis, write, *guarded)
        return key, secret

    def get_key(self, key_id: str) -> ApiKey:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.api_key(key_id)))
        if not data:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return ApiKey.from_hash(data)

    def all_keys(self) -> list[ApiKey]:
        ids = cast(list[str], self.redis.zrange(self.keys.api_keys_index, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(self.keys.api_key(key_id))
        return [ApiKey.from_hash(d) for d in cast(list[dict[str, str]], pipe.execute()) if d]

    def keys_of(self, app_id: str) -> list[ApiKey]:
        return [k for k in self.all_keys() if k.app_id == app_id]

    def revoke(self, key_id: str, now: float) -> ApiKey:
        """Refused from the next request on; the key stays listed, as revoked."""
        self._change_key(key_id, now, revoke=True)
        return self.get_key(key_id)

    def rotate(self, key_id: str, now: float) -> tuple[ApiKey, str]:
        """A new secret for the same key id, app and scope; the old secret stops at once."""
        secret = self._change_key(key_id, now, revoke=False) or ""
        return self.get_key(key_id), secret

    def _change_key(self, key_id: str, now: float, *, revoke: bool) -> str | None:
        """Drop the key's digest and, unless revoking, give it a new secret: read and written
        under WATCH, so two API processes revoking and rotating one key at once leave one
        working secret, or none once revoked, never an orphan digest that still works."""
        name = self.keys.api_key(key_id)

        def write(pipe: Pipeline) -> str | None:
            data = cast(dict[str, str], pipe.hgetall(name))
            if not data:
                raise KeyNotFound(f"no API key with id {key_id!r}")
            key = ApiKey.from_hash(data)
            if key.revoked_at is not None and not revoke:
                raise TenantError(f"API key {key_id!r} is revoked; make a new one")
            pipe.multi()
            if data.get("digest"):
                pipe.delete(self._digest_key(data["digest"]))
            if revoke:
                pipe.hset(name, mapping={"revoked_at": repr(now), "digest": ""})
                return None
            secret, digest = self._new_secret(pipe, key)
            pipe.hset(name, mapping={"rotated_at": repr(now), "digest": digest})
            return secret

        return watched(self.redis, write, name)

    def any_keys(self) -> bool:
        """Were keys ever made (so a refusal is a wrong key, not an unconfigured API)?"""
        return bool(self.redis.zcard(self.keys.api_keys_index))

    def authenticate(self, presented: bytes) -> Principal | None:
        """The principal a presented key acts as, or None: one Redis read."""
        if not presented.startswith(KEY_PREFIX.encode()):
            return None
        flat = cast(
            list[str],
            self._authenticate(
                keys=[self._digest_key(digest_of(presented))], args=[self.keys.app("")]
            ),
        )
        if not flat:
            return None
        found = dict(zip(flat[::2], flat[1::2], strict=True))
        return Principal(found["id"], found.get("app_id") or None, Scope(found["scope"]))

    def _new_secret(self, pipe: Pipeline, key: ApiKey) -> tuple[str, str]:
        """A fresh secret for `key`, its digest hash written in `pipe`: the secret, the digest."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = digest_of(secret.encode())
        pipe.hset(
            self._digest_key(digest),
            mapping={"id": key.id, "app_id": key.app_id, "scope": key.scope.value},
        )
        return secret, digest

    def _digest_key(self, digest: str) -> str:
        return self.keys.api_key_digest(digest)


def new_key(
    tenants: TenantStore, app_name: str | None, scope: Scope, now: float
) -> tuple[ApiKey, str]:
    """A key for the app of that name, or an admin key when `app_name` is None."""
    app_id = tenants.app_named(app_name).id if app_name is not None else ""
    return tenants.create_key(app_id, scope, now)


MAX_RETIRE_PASSES = 5


def retire_app(
    tenants: TenantStore, subscriptions: SubscriptionStore, name: str, now: float
) -> tuple[App, list[str], list[str]]:
    """Delete an app: its keys revoked, its enabled subscriptions disabled (nothing is sent
    for a tenant that is gone), its payments and deliveries kept for admins to read.

    The list is read again until a pass disables nothing: a subscription deleted while it is
    read shifts the pages, and one made meanwhile (by a request authenticated before the app
    went) lands at the end; one made after that disables itself (`settle_for_app`)."""
    app, revoked = tenants.delete_app(name, now)
    reason = f"its app {name!r} was deleted"
    disabled: list[str] = []
    for _ in range(MAX_RETIRE_PASSES):
        found = _disable_enabled_of(subscriptions, app.id, reason, now)
        disabled += found
        if not found:
            break
    return app, revoked, disabled


def _disable_enabled_of(
    subscriptions: SubscriptionStore, app_id: str, reason: str, now: float
) -> list[str]:
    disabled = []
    offset = 0
    while batch := subscriptions.page(offset=offset, limit=200):
        offset += len(batch)
        for sub in batch:
            if sub.app != app_id or not sub.enabled:
                continue
            try:
                subscriptions.disable(sub.id, reason, now=now)
            except SubscriptionNotFound:
                continue  # deleted meanwhile: nothing left to send to
            disabled.append(sub.id)
    return disabled


def settle_for_app(
    tenants: TenantStore,
    subscriptions: SubscriptionStore,
    sub: Subscription,
    now: float,
) -> Subscription:
    """After a change that leaves `sub` enabled: if its app was deleted meanwhile (the
    request authenticated just before), disable it, as the deletion would have. Written
    first, checked second, so either the deletion's pass sees it or this check sees the app
    gone."""
    if not sub.enabled or not sub.app or tenants.app_by_id(sub.app):
        return sub
    try:
        return subscriptions.disable(sub.id, "its app was deleted", now=now)
    except SubscriptionNotFound:
        return sub
