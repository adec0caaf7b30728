"""The payment record as stored in Redis, and the events a transition produces."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from watcher.timing import iso_timestamp, voltage_time
from watcher.voltage.models import FINAL_STATUSES, PaymentStatus

# The version of the event bodies' schema (delivery/event_catalog.py): raised only when a body
# changes in a way an existing receiver could trip on.
EVENT_SCHEMA_VERSION = 1

EVENT_TYPES: dict[str, str] = {status: f"payment.{status}" for status in FINAL_STATUSES}

# How far along its life a status is; a legal move only ever goes forward. A StrEnum key
# hashes as its string, so the stored (plain string) status looks it up directly.
_STATUS_RANK: dict[str, int] = {
    PaymentStatus.GENERATING: 0,
    PaymentStatus.SENDING: 0,
    PaymentStatus.RECEIVING: 1,
    PaymentStatus.APPROVED: 1,
    PaymentStatus.COMPLETED: 2,
    PaymentStatus.FAILED: 2,
    PaymentStatus.EXPIRED: 2,
}


def is_legal_move(old: str, new: str) -> bool:
    """Forward moves only: nothing leaves a final status, nothing goes back to generating."""
    if old == new or old in FINAL_STATUSES:
        return False
    if new not in _STATUS_RANK:
        return False
    if old not in _STATUS_RANK:
        return True
    return _STATUS_RANK[new] > _STATUS_RANK[old]


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def transition_event_id(payment_id: str, status: str) -> str:
    """A payment reaches a final status once, so its event id is derived from both: if Redis
    ever loses its last second of writes and the transition is detected again, subscribers
    get the same `webhook-id` and their dedupe holds."""
    digest = hashlib.sha256(f"{payment_id}\x00{status}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def transition_out(transition: dict[str, Any]) -> dict[str, Any]:
    """A stored transition (unix seconds) as the API and CLI show it."""
    at = transition.get("at")
    return {
        "from": transition.get("from"),
        "to": str(transition.get("to")),
        "at": iso_timestamp(float(at)) if at is not None else "",
        "event_id": transition.get("event_id"),
    }


def event_body(
    *,
    event_type: str,
    at: float,
    payment_id: str,
    previous_status: str | None,
    status: str,
    payment: dict[str, Any],
) -> str:
    """The exact JSON bytes every delivery of this event will carry (and sign)."""
    body = {
        "type": event_type,
        "timestamp": iso_timestamp(at),
        "version": EVENT_SCHEMA_VERSION,
        "data": {
            "payment_id": payment_id,
            "previous_status": previous_status,
            "status": status,
            "payment": payment,
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


@dataclass
class PaymentRecord:
    """What the watcher knows about one payment. Stored as a flat Redis hash."""

    id: str
    status: str
    version: int
    source: str
    watched_at: float
    wallet_id: str | None = None
    payment_request: str | None = None
    payment_hash: str | None = None
    amount_msats: int | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    expires_at: float | None = None
    status_changed_at: float | None = None
    last_poll_at: float | None = None
    poll_count: int = 0
    error_count: int = 0
    error_streak: int = 0
    last_error: str | None = None
    not_found_since: float | None = None
    stopped_reason: str | None = None
    stopped_at: float | None = None
    final_at: float | None = None
    event_id: str | None = None
    raw: dict[str, Any] | None = None
    app: str = ""  # the app whose key started the watch; "": an admin

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_watching(self) -> bool:
        return not self.is_final and self.stopped_reason is None

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> PaymentRecord:
        raw = data.get("raw")
        return cls(
            id=data["id"],
            status=data.get("status", "unknown"),
            version=int(data.get("version", "0")),
            source=data.get("source", "watched"),
            watched_at=float(data.get("watched_at", "0")),
            wallet_id=data.get("wallet_id") or None,
            payment_request=data.get("payment_request") or None,
            payment_hash=data.get("payment_hash") or None,
            amount_msats=_int(data.get("amount_msats")),
            description=data.get("description") or None,
            metadata=json.loads(data["metadata"]) if data.get("metadata") else {},
            created_at=data.get("created_at") or None,
            updated_at=data.get("updated_at") or None,
            expires_at=_float(data.get("expires_at")),
            status_changed_at=_float(data.get("status_changed_at")),
            last_poll_at=_float(data.get("last_poll_at")),
            poll_count=int(data.get("poll_count", "0")),
            error_count=int(data.get("error_count", "0")),
            error_streak=int(data.get("error_streak", "0")),
            last_error=data.get("last_error") or None,
            not_found_since=_float(data.get("not_found_since")),
            stopped_reason=data.get("stopped_reason") or None,
            stopped_at=_float(data.get("stopped_at")),
            final_at=_float(data.get("final_at")),
            event_id=data.get("event_id") or None,
            raw=json.loads(raw) if raw else None,
            app=data.get("app", ""),
        )

    def to_public(self) -> dict[str, Any]:
        """The record as the API and CLI show it (times as RFC 3339)."""

        def ts(value: float | None) -> str | None:
            return iso_timestamp(value) if value is not None else None

        return {
            "id": self.id,
            "status": self.status,
            "watching": self.is_watching,
            "source": self.source,
            "wallet_id": self.wallet_id,
            "payment_request": self.payment_request,
            "payment_hash": self.payment_hash,
            "amount_msats": self.amount_msats,
            "description": self.description,
            "metadata": self.metadata,
            "created_at": voltage_time(self.created_at),
            "updated_at": voltage_time(self.updated_at),
            "expires_at": ts(self.expires_at),
            "watched_at": ts(self.watched_at),
            "last_poll_at": ts(self.last_poll_at),
            "poll_count": self.poll_count,
            "error_count": self.error_count,
            "last_error": self.last_error,
            "stopped_reason": self.stopped_reason,
            "stopped_at": ts(self.stopped_at),
            "final_at": ts(self.final_at),
            "event_id": self.event_id,
            "version": self.version,
            "app_id": self.app or None,
        }
