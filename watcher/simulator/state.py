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
import bisect
import builtins
import functools
import hashlib
import heapq
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from watcher.simulator.invoices import MAX_DESCRIPTION_BYTES, SimInvoice, make_invoice

if TYPE_CHECKING:
    from watcher.simulator.journal import Journal

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
# Payments one `seed_receiving` call may add (the benchmark calls it repeatedly).
MAX_SEED_COUNT = 10_000

_MICROS = 1_000_000


@dataclass
class SimulatorConfig:
    """How the simulated environment behaves.

    `api_keys` maps each accepted `x-api-key` to its permissions (`read`, `receive`, `write`).
    `organization_id`/`environment_id` None accept any id in the path. A new payment answers
    404 for `not_found_window` seconds (Voltage's eventual consistency) and stays `generating`
    for `generating_delay` seconds. `seed` makes preimages and fault dice reproducible.

    Two switches reproduce what Voltage's contract warns about the list endpoint, and apply to
    every payment from the moment they are set: `updated_at_backdate` > 0 writes each status
    transition's `updated_at` up to that many seconds in the past (the order is not a
    watermark), and `list_lag` > 0 makes list calls show payments as they were that many
    seconds ago (pages lag behind reads by id).
    """

    api_keys: dict[str, frozenset[str]] = field(default_factory=lambda: {"sim-key": PERMISSIONS})
    organization_id: str | None = None
    environment_id: str | None = None
    not_found_window: float = 0.0
    generating_delay: float = 0.05
    seed: int | None = None
    updated_at_backdate: float = 0.0
    list_lag: float = 0.0
    # Where payments are kept across restarts (`watcher up --simulate`); None: memory only.
    state_file: Path | None = None

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
        _check_seconds("updated_at_backdate", self.updated_at_backdate)
        _check_seconds("list_lag", self.list_lag)


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
    return f"{_rfc3339_second(seconds)}.{fraction:06d}Z"


@functools.lru_cache(maxsize=4096)
def _rfc3339_second(seconds: int) -> str:
    """The date and time to the second; cached, as a page's timestamps share few seconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


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


@dataclass(slots=True)
class HistoryEntry:
    event_type: str
    micros: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentView:
    """The parts of a payment a transition changes: what a lagging list still shows."""

    status: str
    updated_micros: int
    generated: bool
    error: dict[str, Any] | None
    receipt_count: int
    paid_msats: int | None


@dataclass(slots=True)
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
    # (wall micros a transition took effect, the view until then), oldest first.
    past: list[tuple[int, PaymentView]] = field(default_factory=list)
    hidden_from_filtered_lists: bool = False

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

    def view(self) -> PaymentView:
        return PaymentView(
            status=self.status,
            updated_micros=self.updated_micros,
            generated=self.generated,
            error=self.error,
            receipt_count=len(self.receipts),
            paid_msats=self.paid_msats,
        )

    def view_at(self, micros: int) -> PaymentView:
        """What the payment looked like at wall time `micros` (after its creation)."""
        for changed, view in self.past:
            if micros < changed:
                return view
        return self.view()

    def render(self, view: PaymentView | None = None) -> dict[str, Any]:
        """The Payment object exactly as Voltage's GET answers it (as of `view`, default now)."""
        v = view if view is not None else self.view()
        amount_msats = v.paid_msats if v.paid_msats is not None else self.requested_msats
        amount_msats = amount_msats or 0
        requested = _btc_amount(self.requested_msats) if self.requested_msats is not None else None
        shown_request = self.invoice.payment_request if v.generated else None
        return {
            "direction": "receive",
            "payment_category": "standard",
            "id": self.id,
            "wallet_id": self.wallet_id,
            "organization_id": self.organization_id,
            "environment_id": self.environment_id,
            "metadata": dict(self.metadata) if self.metadata else None,
            "created_at": rfc3339(self.created_micros),
            "updated_at": rfc3339(v.updated_micros),
            "currency": "btc",
            "type": "bolt11",
            "requested_amount": requested,
            "data": {
                "payment_request": shown_request,
                "amount": _btc_amount(amount_msats),
                "amount_msats": amount_msats,
                "memo": self.description,
                "expiration": self.expiration,
                "receipts": [json.loads(json.dumps(r)) for r in self.receipts[: v.receipt_count]],
            },
            "status": v.status,
            "error": dict(v.error) if v.error is not None else None,
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
            "hidden_from_filtered_lists": self.hidden_from_filtered_lists,
        }
        return payment


def _btc_amount(msats: int) -> dict[str, Any]:
    return {"currency": "btc", "amount": msats, "unit": "msats"}


def _receive_error(code: str, detail: str) -> dict[str, Any]:
    return {"type": "receive_failed", "code": code, "detail": detail, "context": None}


class SimulatorState:
    """All payments of the simulated environment, guarded by one lock.

    `clock` returns Unix seconds; tests may inject a fake one. Two sorted indexes keep the list
    calls the watcher makes every second cheap with 100,000 payments held: every payment by
    `(created_micros, id)` and final payments by `(updated_micros, id)` (a final payment never
    changes again, so its entry never moves). Other list queries scan.
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
            updated_at_backdate=base.updated_at_backdate,
            list_lag=base.list_lag,
            state_file=base.state_file,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(base.seed)
        self._payments: dict[str, SimPayment] = {}
        # (deadline in micros, payment id): payments whose status the clock will change.
        self._due: list[tuple[int, str]] = []
        self._by_created: list[tuple[int, str]] = []
        self._final_by_updated: list[tuple[int, str]] = []
        self._journal: Journal | None = None
        if base.state_file is not None:
            self._restore(base.state_file)

    # --- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        return self._config

    def config_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "not_found_window": self._config.not_found_window,
                "generating_delay": self._config.generating_delay,
                "updated_at_backdate": self._config.updated_at_backdate,
                "list_lag": self._config.list_lag,
                "organization_id": self._config.organization_id,
                "environment_id": self._config.environment_id,
                "seed": self._config.seed,
            }

    def update_config(
        self,
        *,
        not_found_window: float | None = None,
        generating_delay: float | None = None,
        updated_at_backdate: float | None = None,
        list_lag: float | None = None,
    ) -> dict[str, Any]:
        """Change settings at run time.

        The timings apply to payments created afterwards; `updated_at_backdate` and `list_lag`
        apply to every payment from now on (transitions from now on, list calls from now on).
        """
        changes = {
            "not_found_window": not_found_window,
            "generating_delay": generating_delay,
            "updated_at_backdate": updated_at_backdate,
            "list_lag": list_lag,
        }
        for name, value in changes.items():
            if value is not None:
                _check_seconds(name, value)
        with self._lock:
            for name, value in changes.items():
                if value is not None:
                    setattr(self._config, name, float(value))
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
            bisect.insort(self._by_created, (payment.created_micros, payment.id))
            heapq.heappush(self._due, (payment.ready_micros, payment.id))
            self._record(payment)

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

    def list(
        self,
        organization_id: str,
        environment_id: str,
        query: ListQuery,
        *,
        use_indexes: bool = True,
    ) -> dict[str, Any]:
        """One page of payments; `use_indexes=False` forces the full scan (tests compare)."""
        scope = query.scope_hash(organization_id, environment_id)
        after = decode_cursor(query.cursor, scope) if query.cursor is not None else None
        with self._lock:
            now = self.now_micros()
            self._advance_due(now)
            lag = round(self._config.list_lag * _MICROS)
            listing = _Listing(organization_id, environment_id, query, after, now - lag, lag > 0)
            ordered = self._ordered_ids(query, after) if use_indexes else None
            if ordered is None:
                rows = listing.scan(self._payments.values())
            else:
                rows = listing.walk(self._payments[payment_id] for payment_id in ordered)
            return listing.page(rows, scope)

    # --- the control surface -----------------------------------------------------------------

    def seed_receiving(
        self,
        count: int,
        *,
        organization_id: str,
        environment_id: str,
        wallet_id: str,
        expiration: int,
        amount_msats: int | None = None,
    ) -> builtins.list[str]:
        """Add `count` payments that are already `receiving` and visible, with signed invoices.

        For benchmarks that need thousands of pending payments in seconds rather than one
        create call each. Ids come from the seeded rng, in `created_at` order: one microsecond
        apart, the last at the end of the call, none before its start.
        """
        _check_seed(count, wallet_id, expiration, amount_msats)
        with self._lock:
            preimage_rng = random.Random(self._rng.getrandbits(128))
            ids = [self._fresh_id() for _ in range(count)]
        started = self.now_micros()
        # Signing takes ~0.1 ms an invoice; do it outside the lock.
        invoices = [
            make_invoice(
                amount_msat=amount_msats or None,
                description="",
                expiry=expiration,
                timestamp=started // _MICROS,
                rng=preimage_rng,
            )
            for _ in ids
        ]
        first = max(started, self.now_micros() - count + 1)
        payments = [
            _seeded_payment(
                payment_id,
                organization_id=organization_id,
                environment_id=environment_id,
                wallet_id=wallet_id,
                invoice=invoice,
                created_micros=first + position,
            )
            for position, (payment_id, invoice) in enumerate(zip(ids, invoices, strict=True))
        ]
        with self._lock:
            for payment in payments:
                self._ensure_new(payment.id)
            self._add_seeded(payments)
            self._record(*payments)
        return ids

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
            receipt = {
                "type": "lightning",
                "data": {
                    "preimage": payment.invoice.preimage,
                    "payment_hash": payment.invoice.payment_hash,
                    "ledger_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                },
            }
            self._transition(payment, COMPLETED, now, "completed", paid=(receipt, amount_msats))
            self._record(payment)
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
            self._record(payment)
            return payment.render()

    def expire(self, payment_id: str) -> dict[str, Any]:
        """Expire the invoice now, whatever its own expiry says."""
        with self._lock:
            payment = self._controlled(payment_id)
            now = self.now_micros()
            self._generate_now(payment, now)
            self._transition(payment, EXPIRED, now, "expired", error=_EXPIRED_ERROR)
            self._record(payment)
            return payment.render()

    def hide_from_filtered_lists(self, payment_id: str, hidden: bool = True) -> dict[str, Any]:
        """Keep a payment out of every list call with a `statuses` filter (or let it back in).

        Voltage warns that a status filter can hide a payment; unfiltered lists and reads by id
        still show it. Works on final payments too; `reset` forgets it with the payment.
        """
        with self._lock:
            now = self.now_micros()
            payment = self._payments.get(canonical_uuid(payment_id) or "")
            if payment is None:
                raise _not_found(payment_id)
            self._advance(payment, now)
            payment.hidden_from_filtered_lists = hidden
            self._record(payment)
            return payment.render_raw(now)

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
            payments = [self._payments[payment_id] for _, payment_id in self._by_created]
            return {"items": [p.render_raw(now) for p in payments], "total": len(payments)}

    def reset(self) -> None:
        with self._lock:
            self._payments.clear()
            self._due.clear()
            self._by_created.clear()
            self._final_by_updated.clear()
            if self._journal is not None:
                self._journal.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._payments)

    # --- internals (call with the lock held) ------------------------------------------------

    def _restore(self, state_file: Path) -> None:
        """Payments an earlier run kept, indexed as if they had been made here."""
        from watcher.simulator.journal import Journal

        self._journal = Journal(state_file)
        restored = self._journal.load()
        for payment in restored:
            self._payments[payment.id] = payment
            self._by_created.append((payment.created_micros, payment.id))
            if payment.is_final:
                self._final_by_updated.append((payment.updated_micros, payment.id))
            deadline = payment.next_deadline()
            if deadline is not None:
                self._due.append((deadline, payment.id))
        self._by_created.sort()
        self._final_by_updated.sort()
        heapq.heapify(self._due)
        if restored:
            # Not the preimages and ids of the first run again.
            self._rng.seed(f"{self._config.seed}:{len(restored)}:{self._clock()}")

    def _record(self, *payments: SimPayment) -> None:
        if self._journal is not None:
            self._journal.record(payments)

    def _ensure_new(self, payment_id: str) -> None:
        if payment_id in self._payments:
            raise ApiError(
                409,
                "payment_exists",
                f"a payment with id {payment_id} already exists",
                context={"payment_id": payment_id},
            )

    def _fresh_id(self) -> str:
        while True:
            payment_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            if payment_id not in self._payments:
                return payment_id

    def _add_seeded(self, payments: builtins.list[SimPayment]) -> None:
        """Store payments made by `seed_receiving`, keeping the indexes sorted."""
        entries = [(p.created_micros, p.id) for p in payments]
        in_order = not self._by_created or self._by_created[-1] < entries[0]
        self._by_created.extend(entries)
        if not in_order:
            self._by_created.sort()  # timsort: two sorted runs, linear
        for payment in payments:
            self._payments[payment.id] = payment
            heapq.heappush(self._due, (payment.expires_micros + 1, payment.id))

    def _ordered_ids(self, query: ListQuery, after: tuple[int, str] | None) -> Iterator[str] | None:
        """Candidate ids in the query's order from an index, or None when it needs a scan.

        The index's entries are exactly the scan's sort positions `(sort value, id)`, so
        walking it from the cursor and filtering gives the scan's answer. That holds for a
        lagging list too: `created_at` never changes, and a payment final in the past view is
        final now with the same `updated_at` (final payments never change).
        """
        if query.sort_key == "created_at":
            index = self._by_created
            low = (
                0
                if query.start_micros is None
                else bisect.bisect_left(index, (query.start_micros,))
            )
            high = (
                len(index)
                if query.end_micros is None
                else bisect.bisect_left(index, (query.end_micros + 1,))
            )
        elif query.statuses is not None and query.statuses <= FINAL_STATUSES:
            index = self._final_by_updated
            low, high = 0, len(index)
        else:
            return None
        descending = query.sort_order == "DESC"
        if after is not None:
            if descending:
                high = min(high, bisect.bisect_left(index, after))
            else:
                low = max(low, bisect.bisect_right(index, after))
        positions = range(high - 1, low - 1, -1) if descending else range(low, high)
        return (index[position][1] for position in positions)

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
        before = payment.status
        if payment.status == GENERATING and now >= payment.ready_micros:
            self._transition(payment, RECEIVING, payment.ready_micros, "generated")
        if payment.status == RECEIVING and now > payment.expires_micros:
            self._transition(
                payment, EXPIRED, payment.expires_micros, "expired", error=_EXPIRED_ERROR
            )
        if payment.status != before:
            self._record(payment)

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
        paid: tuple[dict[str, Any], int | None] | None = None,
    ) -> None:
        """Change the status as of wall time `at`, remembering the view lists showed before.

        History keeps the true time; `updated_at` may be back-dated (`updated_at_backdate`),
        and both strictly increase, even for transitions landing in the same microsecond.
        """
        payment.past.append((at, payment.view()))
        event_at = max(at, payment.history[-1].micros + 1 if payment.history else at)
        shown = at
        if self._config.updated_at_backdate > 0:
            shown -= round(self._rng.uniform(0, self._config.updated_at_backdate) * _MICROS)
        payment.status = status
        payment.updated_micros = max(shown, payment.updated_micros + 1)
        if status == RECEIVING:
            payment.generated = True
        if error is not None:
            payment.error = dict(error)
        if paid is not None:
            receipt, amount_msats = paid
            payment.receipts.append(receipt)
            if amount_msats is not None:
                payment.paid_msats = amount_msats
        payment.history.append(
            HistoryEntry(event_type, event_at, error.get("code") if error is not None else None)
        )
        if status in FINAL_STATUSES:
            bisect.insort(self._final_by_updated, (payment.updated_micros, payment.id))


_EXPIRED_ERROR = _receive_error("expired", "the invoice expired before it was paid")

_Row = tuple[int, str, SimPayment, PaymentView | None]


@dataclass(frozen=True)
class _Listing:
    """One list call's filters, applied to each candidate as of `as_of` (now minus the lag).

    A row is `(sort value, id, payment, view)`; view None means the present state.
    """

    organization_id: str
    environment_id: str
    query: ListQuery
    after: tuple[int, str] | None
    as_of: int
    lagged: bool

    def row(self, payment: SimPayment) -> _Row | None:
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

    def walk(self, candidates: Iterable[SimPayment]) -> list[_Row]:
        """Rows from candidates already in order and past the cursor; stops at a full page."""
        wanted = self.query.limit + 1 if self.query.cursor_mode else None
        rows: list[_Row] = []
        for payment in candidates:
            row = self.row(payment)
            if row is not None:
                rows.append(row)
                if wanted is not None and len(rows) >= wanted:
                    break
        return rows

    def scan(self, payments: Iterable[SimPayment]) -> list[_Row]:
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

    def page(self, rows: list[_Row], scope: str) -> dict[str, Any]:
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


def _position(row: _Row) -> tuple[int, str]:
    return row[0], row[1]


def _check_seed(count: int, wallet_id: str, expiration: int, amount_msats: int | None) -> None:
    if not _is_int(count) or not 1 <= count <= MAX_SEED_COUNT:
        raise ValueError(f"count: expected 1 to {MAX_SEED_COUNT}, got {count!r}")
    if not isinstance(wallet_id, str) or not wallet_id.strip():
        raise ValueError("wallet_id: expected a non-empty string")
    if not _is_int(expiration) or not 1 <= expiration <= MAX_EXPIRATION:
        raise ValueError(f"expiration: expected whole seconds from 1 to {MAX_EXPIRATION}")
    if amount_msats is not None and (
        not _is_int(amount_msats) or not 0 <= amount_msats <= MAX_AMOUNT_MSATS
    ):
        raise ValueError("amount_msats: expected a whole number of msats, 0 or more")


def _seeded_payment(
    payment_id: str,
    *,
    organization_id: str,
    environment_id: str,
    wallet_id: str,
    invoice: SimInvoice,
    created_micros: int,
) -> SimPayment:
    """A payment as it is once its invoice is ready: `receiving`, visible, two history events."""
    return SimPayment(
        id=payment_id,
        organization_id=organization_id,
        environment_id=environment_id,
        wallet_id=wallet_id,
        requested_msats=invoice.amount_msat,
        description=None,
        expiration=invoice.expiry,
        metadata={},
        invoice=invoice,
        created_micros=created_micros,
        visible_micros=created_micros,
        ready_micros=created_micros,
        status=RECEIVING,
        generated=True,
        updated_micros=created_micros + 1,
        history=[
            HistoryEntry("created", created_micros),
            HistoryEntry("generated", created_micros + 1),
        ],
    )


def _not_found(payment_id: str) -> ApiError:
    return ApiError(
        404,
        "payment_not_found",
        f"no payment with id {payment_id} in this organization and environment",
        context={"payment_id": payment_id},
    )


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
