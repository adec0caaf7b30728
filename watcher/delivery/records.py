"""A delivery and an outbox event as stored in Redis (the hashes and stream entries that
delivery/store.py and delivery/attempt_store.py read and write)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from watcher.timing import iso_timestamp


def delivery_id_for(event_id: str, subscription_id: str) -> str:
    digest = hashlib.sha256(f"{event_id}\x00{subscription_id}".encode()).hexdigest()
    return f"dlv_{digest[:24]}"


@dataclass
class Delivery:
    id: str
    event_id: str
    event_type: str
    subscription_id: str
    payment_id: str | None
    outbox_entry: str
    status: str
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    succeeded_at: float | None = None
    attempts_before_resend: int = 0
    app: str = ""  # its subscription's app
    attempt_log: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Delivery:
        def opt_float(name: str) -> float | None:
            return float(data[name]) if data.get(name) else None

        return cls(
            id=data["id"],
            event_id=data["event_id"],
            event_type=data["event_type"],
            subscription_id=data["subscription_id"],
            payment_id=data.get("payment_id") or None,
            outbox_entry=data["outbox_entry"],
            status=data["status"],
            attempts=int(data.get("attempts", "0")),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            next_attempt_at=opt_float("next_attempt_at"),
            last_status_code=int(data["last_status_code"])
            if data.get("last_status_code")
            else None,
            last_error=data.get("last_error") or None,
            succeeded_at=opt_float("succeeded_at"),
            attempts_before_resend=int(data.get("attempts_before_resend") or 0),
            app=data.get("app", ""),
        )

    def to_public(self) -> dict[str, Any]:
        def ts(value: float | None) -> str | None:
            return iso_timestamp(value) if value is not None else None

        return {
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "subscription_id": self.subscription_id,
            "payment_id": self.payment_id,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": ts(self.created_at),
            "updated_at": ts(self.updated_at),
            "next_attempt_at": ts(self.next_attempt_at),
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "succeeded_at": ts(self.succeeded_at),
            "attempt_log": self.attempt_log,
            "app_id": self.app or None,
        }


@dataclass(frozen=True)
class OutboxEvent:
    entry_id: str
    event_id: str
    event_type: str
    payment_id: str | None
    body: str
    target: str | None  # a test event goes to one subscription only
    app: str = ""  # the app that owns its payment (or its test's subscription); "": admin

    @property
    def created_at(self) -> float:
        return int(self.entry_id.split("-")[0]) / 1000

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> OutboxEvent:
        return cls(
            entry_id=entry_id,
            event_id=fields["event_id"],
            event_type=fields["type"],
            payment_id=fields.get("payment_id") or None,
            body=fields["body"],
            target=fields.get("target") or None,
            app=fields.get("app", ""),
        )
