"""List calls: the parsed query, its opaque keyset cursors, and the filters and paging one call
applies to the payments (as of now, or as of `list_lag` ago).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from watcher.simulator.create import is_int
from watcher.simulator.errors import SimulatorError
from watcher.simulator.payment import PaymentView, SimPayment

MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100


SortKey = Literal["created_at", "updated_at"]
SortOrder = Literal["ASC", "DESC"]


@dataclass(frozen=True)
class ListQuery:
    """A parsed `GET .../payments` query; everything but paging is part of the cursor's scope."""

    cursor_mode: bool = False
    cursor: str | None = None
    limit: int = DEFAULT_LIST_LIMIT
    offset: int = 0
    wallet_id: str | None = None
    statuses: frozenset[str] | None = None
    direction: str | None = None
    kind: str | None = None
    payment_category: str | None = None
    line_of_credit_id: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    start_micros: int | None = None
    end_micros: int | None = None
    sort_key: SortKey = "created_at"
    sort_order: SortOrder = "DESC"

    def scope_hash(self, organization_id: str, environment_id: str) -> str:
        """Fingerprint of filters + sort: a cursor is only valid with the same ones."""
        scope = {
            "org": organization_id,
            "env": environment_id,
            "wallet_id": self.wallet_id,
            "statuses": sorted(self.statuses) if self.statuses is not None else None,
            "direction": self.direction,
            "kind": self.kind,
            "payment_category": self.payment_category,
            "line_of_credit_id": self.line_of_credit_id,
            "metadata": sorted(self.metadata),
            "start": self.start_micros,
            "end": self.end_micros,
            "sort_key": self.sort_key,
            "sort_order": self.sort_order,
        }
        canonical = json.dumps(scope, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]


_CURSOR_RECOVERY = "restart with pagination=cursor, repeating the same filters and sort"


def _bad_cursor(detail: str) -> SimulatorError:
    return SimulatorError(
        400,
        "invalid_cursor",
        detail,
        context={"field": "cursor", "recovery": _CURSOR_RECOVERY},
    )


def encode_cursor(scope: str, sort_value: int, payment_id: str) -> str:
    """Opaque keyset position: the last item's (sort value, id) and the query's scope."""
    raw = json.dumps({"v": 1, "s": scope, "k": sort_value, "id": payment_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, scope: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _bad_cursor("the cursor is not one this API issued") from exc
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or not isinstance(data.get("s"), str)
        or not is_int(data.get("k"))
        or not isinstance(data.get("id"), str)
    ):
        raise _bad_cursor("the cursor is not one this API issued")
    if data["s"] != scope:
        raise _bad_cursor(
            "the cursor belongs to a query with different filters or sort; "
            "repeat them unchanged when following next_cursor"
        )
    return int(data["k"]), str(data["id"])


Row = tuple[int, str, SimPayment, PaymentView | None]


@dataclass(frozen=True)
class Listing:
    """One list call's filters, applied to each candidate as of `as_of` (now minus the lag).

    A row is `(sort value, id, payment, view)`; view None means the present state.
    """

    organization_id: str
    environment_id: str
    query: ListQuery
    after: tuple[int, str] | None
    as_of: int
    lagged: bool

    def row(self, payment: SimPayment) -> Row | None:
        if (
            payment.organization_id != self.organization_id
            or payment.environment_id != self.environment_id
            or self.as_of < payment.visible_micros
        ):
            return None
        view = payment.view_at(self.as_of) if self.lagged else None
        status = view.status if view is not None else payment.status
        if not _matches(payment, self.query, status):
            return None
        if self.query.sort_key == "created_at":
            key = payment.created_micros
        else:
            key = view.updated_micros if view is not None else payment.updated_micros
        return key, payment.id, payment, view

    def walk(self, candidates: Iterable[SimPayment]) -> list[Row]:
        """Rows from candidates already in order and past the cursor; stops at a full page."""
        wanted = self.query.limit + 1 if self.query.cursor_mode else None
        rows: list[Row] = []
        for payment in candidates:
            row = self.row(payment)
            if row is not None:
                rows.append(row)
                if wanted is not None and len(rows) >= wanted:
                    break
        return rows

    def scan(self, payments: Iterable[SimPayment]) -> list[Row]:
        """Rows from every payment, sorted; in cursor mode only the next page and one more."""
        rows = [row for payment in payments if (row := self.row(payment)) is not None]
        descending = self.query.sort_order == "DESC"
        after = self.after
        if self.query.cursor_mode:
            if after is not None:
                rows = [
                    r
                    for r in rows
                    if ((r[0], r[1]) < after if descending else (r[0], r[1]) > after)
                ]
            pick = heapq.nlargest if descending else heapq.nsmallest
            return pick(self.query.limit + 1, rows, key=_position)
        rows.sort(key=_position, reverse=descending)
        return rows

    def page(self, rows: list[Row], scope: str) -> dict[str, Any]:
        query = self.query
        if query.cursor_mode:
            has_more = len(rows) > query.limit
            shown = rows[: query.limit]
            last = shown[-1] if shown else None
            return {
                "items": [payment.render(view) for _, _, payment, view in shown],
                "offset": 0,
                "limit": query.limit,
                "total": None,
                "next_cursor": encode_cursor(scope, last[0], last[1])
                if has_more and last is not None
                else None,
                "has_more": has_more,
            }
        shown = rows[query.offset : query.offset + query.limit]
        return {
            "items": [payment.render(view) for _, _, payment, view in shown],
            "offset": query.offset,
            "limit": query.limit,
            "total": len(rows),
            "next_cursor": None,
            "has_more": query.offset + len(shown) < len(rows),
        }


def _position(row: Row) -> tuple[int, str]:
    return row[0], row[1]


def _matches(payment: SimPayment, query: ListQuery, status: str) -> bool:
    """Whether a payment whose status is (or, for a lagging list, was) `status` is listed."""
    if query.wallet_id is not None and payment.wallet_id != query.wallet_id:
        return False
    if query.statuses is not None and (
        status not in query.statuses or payment.hidden_from_filtered_lists
    ):
        return False
    if query.direction is not None and query.direction != "receive":
        return False
    if query.kind is not None and query.kind != "bolt11":
        return False
    if query.payment_category is not None and query.payment_category != "standard":
        return False
    if query.line_of_credit_id is not None:
        return False  # simulated wallets have no line of credit
    if any(payment.metadata.get(key) != value for key, value in query.metadata):
        return False
    if query.start_micros is not None and payment.created_micros < query.start_micros:
        return False
    return not (query.end_micros is not None and payment.created_micros > query.end_micros)
