"""The simulated Voltage environment: every payment, its status machine, and the controls.

Time advances lazily: every access first works out what the clock says each payment has become
(`generating` -> `receiving` once its invoice is ready, `receiving` -> `expired` once the invoice
lapses), back-dating each transition to when it really happened. There are no background
threads, so the simulator behaves the same under any load, and one lock keeps it consistent
across uvicorn's worker threads. The parts live beside it: `config.py` (how the environment
behaves), `create.py` (checking a create), `payment.py` (one payment and how it renders),
`listing.py` (list queries and cursors), `errors.py` (Voltage's error envelope).

Receive errors use Voltage's `ReceiveErrorWire` envelope with type `receive_failed`:
an expired invoice is `{"type": "receive_failed", "code": "expired", ...}`, a forced failure
`{"type": "receive_failed", "code": "<code>", ...}` (default code `no_route`).
"""

from __future__ import annotations

import bisect
import builtins
import heapq
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.simulator.config import SimulatorConfig, check_seconds
from watcher.simulator.create import (
    MAX_AMOUNT_MSATS,
    MAX_EXPIRATION,
    NewPayment,
    canonical_uuid,
    is_int,
)
from watcher.simulator.errors import SimulatorError, invalid_data
from watcher.simulator.invoices import SimInvoice, make_invoice
from watcher.simulator.listing import Listing, ListQuery, decode_cursor
from watcher.simulator.payment import (
    COMPLETED,
    EXPIRED,
    FAILED,
    FINAL_STATUSES,
    GENERATING,
    MICROS,
    RECEIVE_ERROR_CODES,
    RECEIVING,
    HistoryEntry,
    SimPayment,
    receive_error,
)

if TYPE_CHECKING:
    from watcher.simulator.journal import Journal

# Payments one `seed_receiving` call may add (the benchmark calls it repeatedly).
MAX_SEED_COUNT = 10_000


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
                check_seconds(name, value)
        with self._lock:
            for name, value in changes.items():
                if value is not None:
                    setattr(self._config, name, float(value))
        return self.config_snapshot()

    def permissions(self, api_key: str) -> frozenset[str] | None:
        return self._config.api_keys.get(api_key)

    def now_micros(self) -> int:
        return round(self._clock() * MICROS)

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
            timestamp=now // MICROS,
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
            visible_micros=now + round(not_found_window * MICROS),
            ready_micros=now + round(generating_delay * MICROS),
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
            lag = round(self._config.list_lag * MICROS)
            listing = Listing(organization_id, environment_id, query, after, now - lag, lag > 0)
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
                timestamp=started // MICROS,
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
                payment, FAILED, self.now_micros(), "failed", error=receive_error(code, text)
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
            payment = self._known(payment_id, now)
            payment.hidden_from_filtered_lists = hidden
            self._record(payment)
            return payment.render_raw(now)

    def raw(self, payment_id: str) -> dict[str, Any]:
        with self._lock:
            now = self.now_micros()
            return self._known(payment_id, now).render_raw(now)

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
            raise SimulatorError(
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

    def _known(self, payment_id: str, now: int) -> SimPayment:
        """A payment by id in any scope, brought up to `now`; 404 for one never created."""
        payment = self._payments.get(canonical_uuid(payment_id) or "")
        if payment is None:
            raise _not_found(payment_id)
        self._advance(payment, now)
        return payment

    def _controlled(self, payment_id: str) -> SimPayment:
        payment = self._known(payment_id, self.now_micros())
        if payment.is_final:
            raise SimulatorError(
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
            shown -= round(self._rng.uniform(0, self._config.updated_at_backdate) * MICROS)
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


_EXPIRED_ERROR = receive_error("expired", "the invoice expired before it was paid")


def _check_seed(count: int, wallet_id: str, expiration: int, amount_msats: int | None) -> None:
    if not is_int(count) or not 1 <= count <= MAX_SEED_COUNT:
        raise ValueError(f"count: expected 1 to {MAX_SEED_COUNT}, got {count!r}")
    if not isinstance(wallet_id, str) or not wallet_id.strip():
        raise ValueError("wallet_id: expected a non-empty string")
    if not is_int(expiration) or not 1 <= expiration <= MAX_EXPIRATION:
        raise ValueError(f"expiration: expected whole seconds from 1 to {MAX_EXPIRATION}")
    if amount_msats is not None and (
        not is_int(amount_msats) or not 0 <= amount_msats <= MAX_AMOUNT_MSATS
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


def _not_found(payment_id: str) -> SimulatorError:
    return SimulatorError(
        404,
        "payment_not_found",
        f"no payment with id {payment_id} in this organization and environment",
        context={"payment_id": payment_id},
    )
