"""The simulated Voltage environment: configuration, payments and their status machine.

Time advances lazily: every access first works out what the clock says each payment has become
(`generating` -> `receiving` once its invoice is ready, `receiving` -> `expired` once the invoice
lapses), back-dating each transition to when it really happened. There are no background
threads, so the simulator behaves the same under any load, and one lock keeps it consistent
across uvicorn's worker threads.

Receive errors use Voltage's `ReceiveErrorWire` envelope with type `receive_failed`:
an expired invoice is `{"type": "receive_failed", "code": "expired", ...}`, a forced failure
`{"type": "receive_failed", "code": "<code>", ...}` (default code `no_route`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from watcher.simulator.invoices import MAX_DESCRIPTION_BYTES, SimInvoice, make_invoice

PERMISSIONS = frozenset({"read", "receive", "write"})
CREATE_PERMISSIONS = frozenset({"receive", "write"})

GENERATING = "generating"
RECEIVING = "receiving"
COMPLETED = "completed"
EXPIRED = "expired"
FAILED = "failed"
FINAL_STATUSES = frozenset({COMPLETED, EXPIRED, FAILED})
ALL_STATUSES = frozenset({"sending", RECEIVING, "approved", GENERATING, EXPIRED, FAILED, COMPLETED})
PAYMENT_KINDS = frozenset({"bolt11", "onchain", "bip21", "taprootasset"})
# Voltage's ReceiveErrorCode enum: the codes a simulated failure may carry.
RECEIVE_ERROR_CODES = frozenset(
    {
        "receive_failed",
        "expired",
        "rejected",
        "insufficient_funds",
        "hold_not_found",
        "invalid_bolt11_invoice",
        "invalid_payment_amount",
        "invalid_address",
        "missing_address",
        "missing_payment_request",
        "incorrect_currency",
        "quote_failed",
        "exchange_transfer_failed",
        "upstream_failure",
        "no_route",
        "transaction_build_failed",
        "node_permission_denied",
        "broadcast_failed",
        "broadcast_fee_above_max",
    }
)

DEFAULT_EXPIRATION = 3600
MAX_EXPIRATION = 86400
MAX_METADATA_ENTRIES = 50
MAX_METADATA_LENGTH = 256
# 21 million BTC: no invoice can ask for more.
MAX_AMOUNT_MSATS = 21_000_000 * 100_000_000 * 1000
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100

_MICROS = 1_000_000


@dataclass
class SimulatorConfig:
    """How the simulated environment behaves.

    `api_keys` maps each accepted `x-api-key` to its permissions (`read`, `receive`, `write`).
    `organization_id`/`environment_id` None accept any id in the path. A new payment answers
    404 for `not_found_window` seconds (Voltage's eventual consistency) and stays `generating`
    for `generating_delay` seconds. `seed` makes preimages and fault dice reproducible.
    """

    api_keys: dict[str, frozenset[str]] = field(default_factory=lambda: {"sim-key": PERMISSIONS})
    organization_id: str | None = None
    environment_id: str | None = None
    not_found_window: float = 0.0
    generating_delay: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        keys: dict[str, frozenset[str]] = {}
        for key, permissions in self.api_keys.items():
            if not isinstance(key, str) or not key:
                raise ValueError("api_keys: every key must be a non-empty string")
            normalized = frozenset(permissions)
            unknown = normalized - PERMISSIONS
            if unknown:
                raise ValueError(
                    f"api_keys: unknown permission(s) {sorted(unknown)} for a key; "
                    f"expected some of {sorted(PERMISSIONS)}"
                )
            keys[key] = normalized
        self.api_keys = keys
        _check_seconds("not_found_window", self.not_found_window)
        _check_seconds("generating_delay", self.generating_delay)


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ValueError(f"{name}: expected seconds between 0 and 3600, got {value!r}")


class ApiError(Exception):
    """An error answered in Voltage's envelope `{"error": {type, code?, detail, context?}}`."""

    def __init__(
        self,
        status: int,
        error_type: str,
        detail: str,
        *,
        code: str | None = None,
        context: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error_type = error_type
        self.detail = detail
        self.code = code
        self.context = context
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.error_type, self.detail, code=self.code, context=self.context)


def error_envelope(
    error_type: str | None,
    detail: str,
    *,
    code: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Voltage's error body; optional members are left out rather than sent as null."""
    error: dict[str, Any] = {}
    if error_type is not None:
        error["type"] = error_type
    if code is not None:
        error["code"] = code
    error["detail"] = detail
    if context is not None:
        error["context"] = context
    return {"error": error}


def invalid_data(errors: list[tuple[str, str]]) -> ApiError:
    """422 naming every bad field, so a client fixes them all in one round."""
    fields = list(dict.fromkeys(name for name, _ in errors))
    return ApiError(
        422,
        "invalid_data",
        "; ".join(f"{name}: {message}" for name, message in errors),
        context={
            "fields": fields,
            "errors": [{"field": name, "message": message} for name, message in errors],
        },
    )


def rfc3339(micros: int) -> str:
    """RFC 3339 in UTC with microseconds and `Z`, as Voltage prints timestamps."""
    seconds, fraction = divmod(micros, _MICROS)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=fraction)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (floats would lose the last digits)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _MICROS + delta.microseconds


def canonical_uuid(value: str) -> str | None:
    """The lower-case hyphenated form Voltage answers with, or None if not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


# --- Creating a payment ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPayment:
    """A validated create-receive request."""

    id: str
    wallet_id: str
    amount_msats: int | None
    description: str | None
    expiration: int
    metadata: dict[str, str]


def validate_create(body: object) -> NewPayment:
    """Check a create-receive body the way Voltage documents it; raise 422 naming each field."""
    if not isinstance(body, dict):
        raise invalid_data([("body", "expected a JSON object")])
    errors: list[tuple[str, str]] = []

    payment_id: str | None = None
    raw_id = body.get("id")
    if raw_id is None:
        errors.append(("id", "required"))
    elif not isinstance(raw_id, str) or (payment_id := canonical_uuid(raw_id)) is None:
        errors.append(("id", "expected a UUID string"))

    wallet_id = body.get("wallet_id")
    if wallet_id is None:
        errors.append(("wallet_id", "required"))
    elif not isinstance(wallet_id, str) or not wallet_id.strip():
        errors.append(("wallet_id", "expected a non-empty string"))

    kind = body.get("payment_kind")
    if kind is None:
        errors.append(("payment_kind", "required"))
    elif not isinstance(kind, str) or kind not in PAYMENT_KINDS:
        errors.append(("payment_kind", f"expected one of {', '.join(sorted(PAYMENT_KINDS))}"))
    elif kind != "bolt11":
        errors.append(
            ("payment_kind", f"the simulator only supports bolt11 receives, not {kind!r}")
        )

    amount_msats = _validate_amount(body, errors)

    currency = body.get("currency")
    if currency is not None and currency != "btc":
        errors.append(("currency", "expected 'btc'"))

    description = body.get("description")
    if description is not None:
        if not isinstance(description, str):
            errors.append(("description", "expected a string"))
        elif len(description.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
            errors.append(
                ("description", f"at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8 fit an invoice")
            )

    expiration = body.get("expiration")
    if expiration is None:
        expiration = DEFAULT_EXPIRATION
    elif not _is_int(expiration) or not 1 <= expiration <= MAX_EXPIRATION:
        errors.append(("expiration", f"expected whole seconds from 1 to {MAX_EXPIRATION}"))

    metadata = _validate_metadata(body.get("metadata"), errors)

    if errors or payment_id is None:
        raise invalid_data(errors or [("id", "required")])
    return NewPayment(
        id=payment_id,
        wallet_id=str(wallet_id),
        amount_msats=amount_msats,
        description=description,
        expiration=int(expiration),
        metadata=metadata,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_amount(body: dict[str, Any], errors: list[tuple[str, str]]) -> int | None:
    legacy = body.get("amount_msats")
    amount = body.get("amount")
    if legacy is not None and amount is not None:
        errors.append(("amount", "give either amount or amount_msats, not both"))
        errors.append(("amount_msats", "give either amount or amount_msats, not both"))
        return None
    if legacy is not None:
        if not _is_int(legacy) or not 0 <= legacy <= MAX_AMOUNT_MSATS:
            errors.append(("amount_msats", "expected a whole number of msats, 0 or more"))
            return None
        return int(legacy)
    if amount is None:
        return None
    if not isinstance(amount, dict):
        errors.append(("amount", 'expected an object like {"amount": 10000, "currency": "btc"}'))
        return None
    value = amount.get("amount")
    amount_currency = amount.get("currency")
    ok = True
    if amount_currency is None:
        errors.append(("amount.currency", "required"))
        ok = False
    elif amount_currency != "btc":
        errors.append(("amount.currency", "the simulator only supports 'btc' amounts"))
        ok = False
    if value is None:
        errors.append(("amount.amount", "required"))
        ok = False
    elif not _is_int(value) or not 0 <= value <= MAX_AMOUNT_MSATS:
        errors.append(("amount.amount", "expected a whole number of msats, 0 or more"))
        ok = False
    if amount.get("negative") is True:
        errors.append(("amount.negative", "a receive cannot ask for a negative amount"))
        ok = False
    return value if ok and isinstance(value, int) else None


def _validate_metadata(metadata: object, errors: list[tuple[str, str]]) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        errors.append(("metadata", "expected an object of string keys and string values"))
        return {}
    if len(metadata) > MAX_METADATA_ENTRIES:
        errors.append(("metadata", f"at most {MAX_METADATA_ENTRIES} entries"))
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_LENGTH:
            errors.append(
                (f"metadata.{key[:32]}...", f"keys are at most {MAX_METADATA_LENGTH} characters")
            )
        if not isinstance(value, str):
            errors.append((f"metadata.{key[:64]}", "values must be strings"))
        elif len(value) > MAX_METADATA_LENGTH:
            errors.append(
                (f"metadata.{key[:64]}", f"values are at most {MAX_METADATA_LENGTH} characters")
            )
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}


# --- Listing ------------------------------------------------------------------------------


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


def _bad_cursor(detail: str) -> ApiError:
    return ApiError(
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
        or not _is_int(data.get("k"))
        or not isinstance(data.get("id"), str)
    ):
        raise _bad_cursor("the cursor is not one this API issued")
    if data["s"] != scope:
        raise _bad_cursor(
            "the cursor belongs to a query with different filters or sort; "
            "repeat them unchanged when following next_cursor"
        )
    return int(data["k"]), str(data["id"])


# --- Payments -----------------------------------------------------------------------------


@dataclass
class HistoryEntry:
    event_type: str
    micros: int
    error: str | None = None


@dataclass
class SimPayment:
    """One simulated receive, with the invoice secrets the API never shows before settlement."""

    id: str
    organization_id: str
    environment_id: str
    wallet_id: str
    requested_msats: int | None
    description: str | None
    expiration: int
    metadata: dict[str, str]
    invoice: SimInvoice
    created_micros: int
    visible_micros: int
    ready_micros: int
    status: str = GENERATING
    generated: bool = False  # the invoice is shown once the payment has been `receiving`
    updated_micros: int = 0
    error: dict[str, Any] | None = None
    receipts: list[dict[str, Any]] = field(default_factory=list)
    paid_msats: int | None = None
    history: list[HistoryEntry] = field(default_factory=list)

    @property
    def expires_micros(self) -> int:
        return self.invoice.expires_at * _MICROS

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def next_deadline(self) -> int | None:
        """When lazy time advancement next has something to do for this payment."""
        if self.status == GENERATING:
            return self.ready_micros
        if self.status == RECEIVING:
            return self.expires_micros + 1  # expired once now > timestamp + expiry
        return None

    def sort_value(self, key: SortKey) -> int:
        return self.created_micros if key == "created_at" else self.updated_micros

    def render(self) -> dict[str, Any]:
        """The Payment object exactly as Voltage's GET answers it."""
        amount_msats = self.paid_msats if self.paid_msats is not None else self.requested_msats
        amount_msats = amount_msats or 0
        requested = _btc_amount(self.requested_msats) if self.requested_msats is not None else None
        shown_request = self.invoice.payment_request if self.generated else None
        return {
            "direction": "receive",
            "payment_category": "standard",
            "id": self.id,
            "wallet_id": self.wallet_id,
            "organization_id": self.organization_id,
            "environment_id": self.environment_id,
            "metadata": dict(self.metadata) if self.metadata else None,
            "created_at": rfc3339(self.created_micros),
            "updated_at": rfc3339(self.updated_micros),
            "currency": "btc",
            "type": "bolt11",
            "requested_amount": requested,
            "data": {
                "payment_request": shown_request,
                "amount": _btc_amount(amount_msats),
                "amount_msats": amount_msats,
                "memo": self.description,
                "expiration": self.expiration,
                "receipts": [json.loads(json.dumps(r)) for r in self.receipts],
            },
            "status": self.status,
            "error": dict(self.error) if self.error is not None else None,
            "exchanges": [],
            "frozen": [],
        }

    def render_history(self) -> dict[str, Any]:
        return {
            "events": [
                {
                    "event_type": entry.event_type,
                    "error": entry.error,
                    "time": rfc3339(entry.micros),
                    "position": position,
                }
                for position, entry in enumerate(self.history)
            ]
        }

    def render_raw(self, now_micros: int) -> dict[str, Any]:
        """Everything, secrets included, for debugging and benchmarks."""
        payment = self.render()
        payment["sim"] = {
            "visible": now_micros >= self.visible_micros,
            "visible_at": rfc3339(self.visible_micros),
            "ready_at": rfc3339(self.ready_micros),
            "expires_at": rfc3339(self.expires_micros),
            "payment_request": self.invoice.payment_request,
            "payment_hash": self.invoice.payment_hash,
            "preimage": self.invoice.preimage,
            "history": self.render_history()["events"],
        }
        return payment


def _btc_amount(msats: int) -> dict[str, Any]:
    return {"currency": "btc", "amount": msats, "unit": "msats"}


def _receive_error(code: str, detail: str) -> dict[str, Any]:
    return {"type": "receive_failed", "code": code, "detail": detail, "context": None}


class SimulatorState:
    """All payments of the simulated environment, guarded by one lock.

    `clock` returns Unix seconds; tests may inject a fake one.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = config if config is not None else SimulatorConfig()
        # A private copy: PATCH /_sim/config must not mutate the caller's object.
        self._config = SimulatorConfig(
            api_keys=dict(base.api_keys),
            organization_id=base.organization_id,
            environment_id=base.environment_id,
            not_found_window=base.not_found_window,
            generating_delay=base.generating_delay,
            seed=base.seed,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(base.seed)
        self._payments: dict[str, SimPayment] = {}
        # (deadline in micros, payment id): payments whose status the clock will change.
        self._due: list[tuple[int, str]] = []

    # --- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        return self._config

    def config_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "not_found_window": self._config.not_found_window,
                "generating_delay": self._config.generating_delay,
                "organization_id": self._config.organization_id,
                "environment_id": self._config.environment_id,
                "seed": self._config.seed,
            }

    def update_config(
        self, *, not_found_window: float | None = None, generating_delay: float | None = None
    ) -> dict[str, Any]:
        """Change timings at run time; they apply to payments created afterwards."""
        if not_found_window is not None:
            _check_seconds("not_found_window", not_found_window)
        if generating_delay is not None:
            _check_seconds("generating_delay", generating_delay)
        with self._lock:
            if not_found_window is not None:
                self._config.not_found_window = float(not_found_window)
            if generating_delay is not None:
                self._config.generating_delay = float(generating_delay)
        return self.config_snapshot()

    def permissions(self, api_key: str) -> frozenset[str] | None:
        return self._config.api_keys.get(api_key)

    def now_micros(self) -> int:
        return round(self._clock() * _MICROS)

    # --- the API ---------------------------------------------------------------------------

    def create(self, organization_id: str, environment_id: str, new: NewPayment) -> None:
        """Store a new receive; 409 `payment_exists` when the id was used before."""
        with self._lock:
            self._ensure_new(new.id)
            preimage_rng = random.Random(self._rng.getrandbits(128))
            now = self.now_micros()
            not_found_window = self._config.not_found_window
            generating_delay = self._config.generating_delay
        # Signing takes a while; do it outside the lock.
        invoice = make_invoice(
            amount_msat=new.amount_msats,
            description=new.description or "",
            expiry=new.expiration,
            timestamp=now // _MICROS,
            rng=preimage_rng,
        )
        payment = SimPayment(
            id=new.id,
            organization_id=organization_id,
            environment_id=environment_id,
            wallet_id=new.wallet_id,
            requested_msats=new.amount_msats,
            description=new.description,
            expiration=new.expiration,
            metadata=new.metadata,
            invoice=invoice,
            created_micros=now,
            visible_micros=now + round(not_found_window * _MICROS),
            ready_micros=now + round(generating_delay * _MICROS),
            updated_micros=now,
            history=[HistoryEntry("created", now)],
        )
        with self._lock:
            self._ensure_new(new.id)  # a concurrent create with the same id may have won
            self._payments[payment.id] = payment
            heapq.heappush(self._due, (payment.ready_micros, payment.id))

    def get(self, organization_id: str, environment_id: str, payment_id: str) -> dict[str, Any]:
        with self._lock:
            payment = self._visible(organization_id, environment_id, payment_id)
            if payment is None:
                raise _not_found(payment_id)
            return payment.render()

    def history(self, organization_id: str, environment_id: str, payment_id: str) -> dict[str, Any]:
        """Voltage answers an empty timeline, not a 404, for a payment it does not know."""
        with self._lock:
            payment = self._visible(organization_id, environment_id, payment_id)
            return payment.render_history() if payment is not None else {"events": []}

    def list(self, organization_id: str, environment_id: str, query: ListQuery) -> dict[str, Any]:
        scope = query.scope_hash(organization_id, environment_id)
        after = decode_cursor(query.cursor, scope) if query.cursor is not None else None
        with self._lock:
            now = self.now_micros()
            self._advance_due(now)
            matching = [
                p
                for p in self._payments.values()
                if p.organization_id == organization_id
                and p.environment_id == environment_id
                and now >= p.visible_micros
                and _matches(p, query)
            ]
            descending = query.sort_order == "DESC"

            def position(p: SimPayment) -> tuple[int, str]:
                return (p.sort_value(query.sort_key), p.id)

            if query.cursor_mode:
                if after is not None:
                    matching = [
                        p
                        for p in matching
                        if (position(p) < after if descending else position(p) > after)
                    ]
                pick = heapq.nlargest if descending else heapq.nsmallest
                page = pick(query.limit + 1, matching, key=position)
                has_more = len(page) > query.limit
                page = page[: query.limit]
                next_cursor = (
                    encode_cursor(scope, *position(page[-1])) if has_more and page else None
                )
                return {
                    "items": [p.render() for p in page],
                    "offset": 0,
                    "limit": query.limit,
                    "total": None,
                    "next_cursor": next_cursor,
                    "has_more": has_more,
                }
            matching.sort(key=position, reverse=descending)
            page = matching[query.offset : query.offset + query.limit]
            return {
                "items": [p.render() for p in page],
                "offset": query.offset,
                "limit": query.limit,
                "total": len(matching),
                "next_cursor": None,
                "has_more": query.offset + len(page) < len(matching),
            }

    # --- the control surface -----------------------------------------------------------------

    def settle(self, payment_id: str, amount_msats: int | None = None) -> dict[str, Any]:
        """Pay the invoice: `completed` with a lightning receipt (preimage, hash, ledger id)."""
        with self._lock:
            payment = self._controlled(payment_id)
            if amount_msats is not None and (
                not 0 < amount_msats <= MAX_AMOUNT_MSATS
                or (payment.requested_msats and amount_msats < payment.requested_msats)
            ):
                raise invalid_data(
                    [("amount_msats", "must be positive and cover the invoice amount")]
                )
            now = self.now_micros()
            self._generate_now(payment, now)
            payment.receipts.append(
                {
                    "type": "lightning",
                    "data": {
                        "preimage": payment.invoice.preimage,
                        "payment_hash": payment.invoice.payment_hash,
                        "ledger_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                    },
                }
            )
            if amount_msats is not None:
                payment.paid_msats = amount_msats
            self._transition(payment, COMPLETED, now, "completed")
            return payment.render()

    def fail(
        self, payment_id: str, code: str = "no_route", detail: str | None = None
    ) -> dict[str, Any]:
        """Fail the receive; a payment still `generating` fails without ever getting an invoice."""
        if code not in RECEIVE_ERROR_CODES:
            expected = ", ".join(sorted(RECEIVE_ERROR_CODES))
            raise invalid_data([("code", f"expected one of {expected}")])
        with self._lock:
            payment = self._controlled(payment_id)
            text = detail or f"simulated receive failure: {code}"
            self._transition(
                payment, FAILED, self.now_micros(), "failed", error=_receive_error(code, text)
            )
            return payment.render()

    def expire(self, payment_id: str) -> dict[str, Any]:
        """Expire the invoice now, whatever its own expiry says."""
        with self._lock:
            payment = self._controlled(payment_id)
            now = self.now_micros()
            self._generate_now(payment, now)
            self._transition(payment, EXPIRED, now, "expired", error=_EXPIRED_ERROR)
            return payment.render()

    def raw(self, payment_id: str) -> dict[str, Any]:
        with self._lock:
            now = self.now_micros()
            payment = self._payments.get(canonical_uuid(payment_id) or "")
            if payment is None:
                raise _not_found(payment_id)
            self._advance(payment, now)
            return payment.render_raw(now)

    def raw_list(self) -> dict[str, Any]:
        with self._lock:
            now = self.now_micros()
            self._advance_due(now)
            payments = sorted(self._payments.values(), key=lambda p: (p.created_micros, p.id))
            return {"items": [p.render_raw(now) for p in payments], "total": len(payments)}

    def reset(self) -> None:
        with self._lock:
            self._payments.clear()
            self._due.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._payments)

    # --- internals (call with the lock held) ------------------------------------------------

    def _ensure_new(self, payment_id: str) -> None:
        if payment_id in self._payments:
            raise ApiError(
                409,
                "payment_exists",
                f"a payment with id {payment_id} already exists",
                context={"payment_id": payment_id},
            )

    def _visible(
        self, organization_id: str, environment_id: str, payment_id: str
    ) -> SimPayment | None:
        payment = self._payments.get(canonical_uuid(payment_id) or "")
        if (
            payment is None
            or payment.organization_id != organization_id
            or payment.environment_id != environment_id
        ):
            return None
        now = self.now_micros()
        if now < payment.visible_micros:
            return None  # eventual consistency: "not yet", not "gone"
        self._advance(payment, now)
        return payment

    def _controlled(self, payment_id: str) -> SimPayment:
        payment = self._payments.get(canonical_uuid(payment_id) or "")
        if payment is None:
            raise _not_found(payment_id)
        self._advance(payment, self.now_micros())
        if payment.is_final:
            raise ApiError(
                409,
                "payment_final",
                f"payment {payment.id} is already {payment.status}; final states never change",
                context={"payment_id": payment.id, "status": payment.status},
            )
        return payment

    def _advance(self, payment: SimPayment, now: int) -> None:
        """Apply every transition the clock has made due, at the time it became due."""
        if payment.status == GENERATING and now >= payment.ready_micros:
            self._transition(payment, RECEIVING, payment.ready_micros, "generated")
        if payment.status == RECEIVING and now > payment.expires_micros:
            self._transition(
                payment, EXPIRED, payment.expires_micros, "expired", error=_EXPIRED_ERROR
            )

    def _advance_due(self, now: int) -> None:
        """Advance every payment whose deadline passed; cheaper than scanning them all."""
        while self._due and self._due[0][0] <= now:
            _, payment_id = heapq.heappop(self._due)
            payment = self._payments.get(payment_id)
            if payment is None or payment.is_final:
                continue
            self._advance(payment, now)
            deadline = payment.next_deadline()
            if deadline is not None:
                heapq.heappush(self._due, (deadline, payment_id))

    def _generate_now(self, payment: SimPayment, now: int) -> None:
        if payment.status == GENERATING:
            self._transition(payment, RECEIVING, now, "generated")

    def _transition(
        self,
        payment: SimPayment,
        status: str,
        at: int,
        event_type: str,
        *,
        error: dict[str, Any] | None = None,
    ) -> None:
        # updated_at strictly increases, even for transitions landing in the same microsecond.
        at = max(at, payment.updated_micros + 1)
        payment.status = status
        payment.updated_micros = at
        if status == RECEIVING:
            payment.generated = True
        if error is not None:
            payment.error = dict(error)
        payment.history.append(
            HistoryEntry(event_type, at, error.get("code") if error is not None else None)
        )


_EXPIRED_ERROR = _receive_error("expired", "the invoice expired before it was paid")


def _not_found(payment_id: str) -> ApiError:
    return ApiError(
        404,
        "payment_not_found",
        f"no payment with id {payment_id} in this organization and environment",
        context={"payment_id": payment_id},
    )


def _matches(payment: SimPayment, query: ListQuery) -> bool:
    if query.wallet_id is not None and payment.wallet_id != query.wallet_id:
        return False
    if query.statuses is not None and payment.status not in query.statuses:
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
