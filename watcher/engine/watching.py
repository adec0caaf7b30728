"""Entry points that start a watch: create a receive and watch it, or adopt an existing id.
The HTTP API and the CLI call these with the process's runtime."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from watcher.engine.list_health import ListHealth
from watcher.engine.records import PaymentRecord
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore
from watcher.logging import get_logger
from watcher.settings import Settings
from watcher.voltage.client import VoltageClient
from watcher.voltage.errors import VoltageError
from watcher.voltage.limits import (
    MAX_AMOUNT_MSATS,
    MAX_DESCRIPTION_BYTES,
    MAX_EXPIRATION,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_LENGTH,
)
from watcher.voltage.models import Payment, PaymentStatus
from watcher.voltage.purpose import Purpose

log = get_logger(__name__)

# Client ids map to payment ids deterministically, so a repeated create finds the same
# payment (here or, via Voltage's 409, on Voltage) instead of making a second invoice.
CLIENT_ID_NAMESPACE = uuid.UUID("5b0e4a8e-51c4-4b55-9a51-5e2b9f2a8d01")

# Where adopt puts a new watch until its real first read is scheduled a moment later: beyond
# the dispatcher's reach meanwhile (bench.detection saw 33 reads of 1,000 fresh payments
# claimed in that gap), and soon enough if the process dies in between.
PROVISIONAL_FIRST_READ = 5.0


class Wiring(Protocol):
    """What starting a watch needs of the process's wiring (watcher.runtime.Runtime), named
    here so the engine does not import the wiring module above it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def payments(self) -> PaymentStore: ...
    @property
    def poll_policy(self) -> PollPolicy: ...
    @property
    def list_health(self) -> ListHealth: ...
    @property
    def voltage(self) -> VoltageClient: ...
    @property
    def clock(self) -> Callable[[], float]: ...


def payment_id_for_client_id(wallet_id: str, client_id: str, owner: str = "") -> str:
    """Client ids are each app's own: two apps' "order-1" are two payments (an admin's keep
    the ids they had before apps existed)."""
    name = f"{wallet_id}\x00{client_id}" + (f"\x00{owner}" if owner else "")
    return str(uuid.uuid5(CLIENT_ID_NAMESPACE, name))


class InvalidCreate(ValueError):
    """A create Voltage would refuse, found before anything is sent or stored."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


def _is_valid_text(value: str) -> bool:
    """No lone surrogates (from bytes that were not UTF-8): JSON can carry them, Voltage and
    Redis cannot."""
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)


def _text_problems(field: str, value: object, max_chars: int, *, min_chars: int = 0) -> list[str]:
    if not isinstance(value, str):
        return [f"{field}: expected text"]
    if not _is_valid_text(value):
        return [f"{field}: must be valid Unicode text (no lone surrogates)"]
    if not min_chars <= len(value) <= max_chars:
        return [f"{field}: expected {min_chars} to {max_chars} characters, got {len(value)}"]
    return []


def create_problems(
    *,
    amount_msats: int | None,
    description: str | None,
    expiration: int | None,
    metadata: dict[str, str] | None,
) -> list[tuple[str, str]]:
    """(field, message) for every create field Voltage would refuse; empty when all fit."""
    problems: list[tuple[str, str]] = []
    if amount_msats is not None and (
        isinstance(amount_msats, bool)
        or not isinstance(amount_msats, int)
        or not 0 <= amount_msats <= MAX_AMOUNT_MSATS
    ):
        problems.append(("amount_msats", f"expected whole msats from 0 to {MAX_AMOUNT_MSATS}"))
    if description is not None:
        problems += _description_problems(description)
    if expiration is not None and (
        isinstance(expiration, bool)
        or not isinstance(expiration, int)
        or not 1 <= expiration <= MAX_EXPIRATION
    ):
        problems.append(("expiration", f"expected whole seconds from 1 to {MAX_EXPIRATION}"))
    if metadata is not None:
        problems += _metadata_problems(metadata)
    return problems


def _description_problems(description: object) -> list[tuple[str, str]]:
    if not isinstance(description, str) or not _is_valid_text(description):
        return [("description", "must be valid Unicode text (no lone surrogates)")]
    size = len(description.encode("utf-8"))
    if size > MAX_DESCRIPTION_BYTES:
        return [
            (
                "description",
                f"at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8 fit an invoice, got {size}",
            )
        ]
    return []


def _metadata_problems(metadata: object) -> list[tuple[str, str]]:
    if not isinstance(metadata, dict):
        return [("metadata", "expected an object of text keys and text values")]
    problems: list[tuple[str, str]] = []
    if len(metadata) > MAX_METADATA_ENTRIES:
        problems.append(
            ("metadata", f"at most {MAX_METADATA_ENTRIES} entries, got {len(metadata)}")
        )
    for key, value in metadata.items():
        for message in _text_problems("key", key, MAX_METADATA_LENGTH, min_chars=1):
            problems.append(("metadata", f"{message} ({str(key)[:32]!r})"))
        if isinstance(key, str):
            for message in _text_problems("value", value, MAX_METADATA_LENGTH):
                problems.append((f"metadata.{key[:32]}", message))
    return problems


class ForeignPayment(Exception):
    """The payment is another app's: its caller must hear what an unknown id would get."""

    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id} belongs to another app")
        self.payment_id = payment_id


@dataclass(frozen=True)
class WatchResult:
    record: PaymentRecord
    created: bool  # False when the payment was already watched
    invoice_ready: bool


def create_and_watch(
    rt: Wiring,
    *,
    amount_msats: int | None,
    description: str | None = None,
    expiration: int | None = None,
    metadata: dict[str, str] | None = None,
    wallet_id: str | None = None,
    client_id: str | None = None,
    invoice_wait: float | None = None,
    owner: str = "",
) -> WatchResult:
    """Create a receive on Voltage and watch it. Answers as soon as the invoice exists, or
    after `invoice_wait` with the status so far (the watch goes on either way). Raises
    `InvalidCreate` first, sending nothing, for fields Voltage would refuse. The payment
    belongs to `owner` (an app id; "" for an admin)."""
    problems = create_problems(
        amount_msats=amount_msats,
        description=description,
        expiration=expiration,
        metadata=metadata,
    )
    if problems:
        raise InvalidCreate(problems)
    wallet = wallet_id or rt.settings.voltage_wallet_id
    if not wallet:
        raise ValueError("wallet_id: no wallet given and VOLTAGE_WALLET_ID is not set")
    payment_id = (
        payment_id_for_client_id(wallet, client_id, owner) if client_id else str(uuid.uuid4())
    )
    existing = _already_watched(rt, payment_id, owner)
    if existing is not None:
        return existing
    if rt.payments.claim(payment_id, owner) != owner:
        raise ForeignPayment(payment_id)  # another's create of this id is under way
    rt.voltage.submit_receive(
        wallet_id=wallet,
        amount_msats=amount_msats,
        description=description,
        expiration=expiration,
        metadata=metadata,
        payment_id=payment_id,
    )
    now = rt.clock()
    wait = rt.settings.voltage_invoice_wait if invoice_wait is None else invoice_wait
    try:
        payment, ready = rt.voltage.wait_for_invoice(payment_id, timeout=wait), True
    except VoltageError as exc:
        # Voltage accepted the create; it is ours to watch even if the invoice is late.
        log.warning("invoice not ready yet; watching anyway", payment_id=payment_id, error=str(exc))
        payment = _placeholder(payment_id, wallet, amount_msats, description, metadata)
        ready = False
    extra = {"client_id": client_id} if client_id else {}
    return _adopt_created(rt, payment, now, owner, extra, ready)


def _adopt_created(
    rt: Wiring, payment: Payment, now: float, owner: str, extra: dict[str, str], ready: bool
) -> WatchResult:
    """Adopt what this create made. A Voltage webhook may have adopted it first (for its
    creator: the claim said whose it is); then this create completes that record."""
    created = rt.payments.adopt(
        payment,
        source="created",
        now=now,
        first_poll_at=now + PROVISIONAL_FIRST_READ,
        extra={**extra, "app": owner} if owner else extra,
    )
    if not created:
        created = rt.payments.mark_created(payment.id, extra)
    record = _first_read_scheduled(rt, payment.id, now, created)
    log.info("watching new payment", payment_id=payment.id, status=record.status)
    return WatchResult(
        record, created=created, invoice_ready=ready and bool(record.payment_request)
    )


def watch_existing(rt: Wiring, payment_id: str, owner: str | None = None) -> WatchResult:
    """Adopt a payment created elsewhere, for `owner` (an app id, "" for an admin; None for
    whoever claimed it, as a Voltage webhook does). Raises VoltageNotFound if Voltage does not
    know it, and ForeignPayment, after the same read of Voltage, if it is another app's.

    A payment is its first claimant's: its creator claims it before asking Voltage to make
    it, a watcher only after Voltage showed it, so a create always claims first."""
    try:
        existing = _already_watched(rt, payment_id, owner or "")
    except ForeignPayment:
        _refuse_as_unknown(rt, payment_id)
    if existing is not None:
        return existing
    payment = rt.voltage.get_payment(payment_id, purpose=Purpose.ADOPT)
    holder = rt.payments.claim(payment_id, owner or "")
    if owner and holder != owner:
        raise ForeignPayment(payment_id)
    now = rt.clock()
    created = rt.payments.adopt(
        payment,
        source="watched",
        now=now,
        first_poll_at=now + PROVISIONAL_FIRST_READ,
        extra={"app": holder} if holder else None,
    )
    record = _first_read_scheduled(rt, payment_id, now, created)
    log.info("watching existing payment", payment_id=payment_id, status=record.status)
    return WatchResult(record, created=created, invoice_ready=bool(record.payment_request))


def _refuse_as_unknown(rt: Wiring, payment_id: str) -> NoReturn:
    """Another app's payment: read Voltage as for an id the watcher does not know, so the
    answer (a Voltage error, or the refusal) and its timing say nothing more."""
    rt.voltage.get_payment(payment_id, purpose=Purpose.ADOPT)
    raise ForeignPayment(payment_id)


def _already_watched(rt: Wiring, payment_id: str, owner: str) -> WatchResult | None:
    """The watch of `payment_id` if there is one; ForeignPayment if it is not `owner`'s (an
    admin, "", owns every one). Another's record is never written to."""
    existing = rt.payments.get(payment_id)
    if existing is None:
        return None
    if owner and existing.app != owner:
        raise ForeignPayment(payment_id)
    # Maybe stored by an attempt whose replica wait fell short: confirm it now.
    rt.payments.ensure_replicated(payment_id, rt.clock())
    return WatchResult(existing, created=False, invoice_ready=bool(existing.payment_request))


def _first_read_scheduled(rt: Wiring, payment_id: str, now: float, created: bool) -> PaymentRecord:
    """A payment with its invoice needs no read of its own until it expires (sweeps detect);
    one still without it is read back soon. Adopt scheduled it provisionally."""
    record = rt.payments.get(payment_id)
    assert record is not None  # noqa: S101 - adopt just wrote it
    if created and record.is_watching:
        fallback = rt.list_health.in_fallback()
        rt.payments.reschedule(payment_id, rt.poll_policy.next_poll(record, now, fallback=fallback))
    return record


def _placeholder(
    payment_id: str,
    wallet_id: str,
    amount_msats: int | None,
    description: str | None,
    metadata: dict[str, str] | None,
) -> Payment:
    raw: dict[str, Any] = {
        "id": payment_id,
        "status": PaymentStatus.GENERATING.value,
        "wallet_id": wallet_id,
        "direction": "receive",
        "metadata": metadata or {},
        "data": {"payment_request": None, "amount_msats": amount_msats, "memo": description},
    }
    return Payment.from_api(raw)
