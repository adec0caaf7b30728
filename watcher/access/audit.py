"""Who changed what, and when: one entry per change made through the API or the CLI.

Operators asked which token rotated a secret or deleted a subscription, and nothing said. An
entry names its actor (an API token by its id, never the token; a CLI user), the action, the
object and a detail made of names and counts only: no URL, body or secret reaches it, since
a URL may carry credentials. The log is a capped Redis stream, newest first when read.
"""

from __future__ import annotations

import getpass
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from watcher.keys import Keys
from watcher.logging import get_logger
from watcher.paging import stream_page
from watcher.timing import iso_timestamp

log = get_logger(__name__)

# About a year of a busy operator's changes; XADD trims approximately, so it costs nothing.
MAX_ENTRIES = 100_000


class AuditAction(StrEnum):
    PAYMENT_CREATED = "payment.created"
    PAYMENT_WATCHED = "payment.watched"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_CHANGED = "subscription.changed"
    SUBSCRIPTION_DELETED = "subscription.deleted"
    ROTATED = "subscription.secret_rotated"
    TEST_SENT = "subscription.test_sent"
    RECOVERED = "subscription.recovered"
    REDELIVERED = "delivery.redelivered"
    APP_CREATED = "app.created"
    APP_DELETED = "app.deleted"
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    KEY_ROTATED = "key.rotated"


def token_actor(token: bytes) -> str:
    """An API token's id in the log: `tok_` and 16 hex digits of its SHA-256, which names it
    without revealing it (`printf %s "$TOKEN" | sha256sum | cut -c1-16`)."""
    return f"tok_{hashlib.sha256(token).hexdigest()[:16]}"


def cli_actor() -> str:
    """A CLI command acts as the operating-system user that ran it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@dataclass(frozen=True)
class AuditEntry:
    id: str  # the stream entry id, also the page cursor
    at: str
    actor: str
    action: str
    target: str
    detail: str

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> AuditEntry:
        return cls(
            id=entry_id,
            at=fields.get("at", ""),
            actor=fields.get("actor", ""),
            action=fields.get("action", ""),
            target=fields.get("target", ""),
            detail=fields.get("detail", ""),
        )

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


class AuditLog:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def record(
        self, actor: str, action: AuditAction, target: str, now: float, detail: str = ""
    ) -> None:
        """Best effort, after the change: an entry that cannot be written is logged instead."""
        fields = {
            "at": iso_timestamp(now),
            "actor": actor,
            "action": action.value,
            "target": target,
            "detail": detail,
        }
        try:
            self.redis.xadd(
                self.keys.audit, cast(Any, fields), maxlen=MAX_ENTRIES, approximate=True
            )
        except redis.RedisError:
            # The change is made: failing now would lose what it answers (a one-time secret).
            log.exception("audit entry not written", **fields)

    def page(
        self,
        *,
        cursor: str | None,
        limit: int,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest first, each filter only when given; raises CursorError."""
        wanted = {"actor": actor, "action": action, "target": target}

        def keep(_entry_id: str, fields: dict[str, str]) -> bool:
            return all(v is None or fields.get(k) == v for k, v in wanted.items())

        entries, next_cursor = stream_page(
            self.redis,
            self.keys.audit,
            cursor=cursor,
            limit=limit,
            newest_first=True,
            since_ms=None,
            until_ms=None,
            keep=keep,
        )
        return [AuditEntry.from_entry(i, f) for i, f in entries], next_cursor
