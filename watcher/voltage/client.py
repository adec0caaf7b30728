"""The client for Voltage's payments API: create a receive, read one payment, list them,
read a payment's history.

How a request is sent (pooling, timeouts, retries, typed errors, keeping the key secret) is
``transport.py``; what a list asks for is ``filters.py``; request bodies and answers are
``receive.py`` and ``parsing.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Unpack
from urllib.parse import quote

import structlog
from pydantic import SecretStr

from watcher.voltage.checks import check_text
from watcher.voltage.errors import (
    InvoiceNotReady,
    VoltageConflict,
    VoltageError,
    VoltageMalformedResponse,
    VoltageNotFound,
)
from watcher.voltage.filters import (
    ALL_PAYMENTS,
    DEFAULT_PAGE_SIZE,
    PaymentFilter,
    PaymentFilterFields,
    build_list_params,
)
from watcher.voltage.models import HistoryEvent, Payment, PaymentList
from watcher.voltage.parsing import ignore_body, parse_history, parse_page, parse_payment
from watcher.voltage.purpose import Purpose
from watcher.voltage.receive import ReceiveFields, build_receive_body
from watcher.voltage.retry import RetryPolicy
from watcher.voltage.transport import VoltageTransport

if TYPE_CHECKING:
    from watcher.settings import Settings

__all__ = ["VoltageClient"]

log = structlog.stdlib.get_logger(__name__)

# Polling a fresh receive for its invoice: ~100 ms doubling to a 2 s cap (what Voltage's
# own clients do). The first read also waits 100 ms: one sent at once nearly always finds the
# invoice still generating (bench.detection --mix: 1.85 read-backs per payment without it).
INVOICE_POLL_FIRST = 0.1
INVOICE_POLL_CAP = 2.0


class VoltageClient(VoltageTransport):
    """Talks to one Voltage environment with one API key. Thread-safe; reuse it."""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, retry: RetryPolicy | None = None
    ) -> VoltageClient:
        """A client for the environment the settings name; fails naming missing settings."""
        settings.require_voltage()
        return cls(
            base_url=settings.voltage_api_url,
            api_key=settings.voltage_api_key or SecretStr(""),
            organization_id=settings.voltage_organization_id or "",
            environment_id=settings.voltage_environment_id or "",
            connect_timeout=settings.voltage_connect_timeout,
            read_timeout=settings.voltage_read_timeout,
            retry=retry or RetryPolicy.from_settings(settings),
        )

    # --- create ------------------------------------------------------------------------------

    def submit_receive(self, **receive: Unpack[ReceiveFields]) -> str:
        """Ask Voltage to create a BOLT11 receive; returns the payment id to read it back by.

        Safe to retry with the same ``payment_id``: Voltage answers 409 ``payment_exists`` to
        a reused id, which here means an earlier attempt (whose 202 we may not have seen)
        already created it. ``amount_msats=None`` creates an any-amount invoice. The
        arguments are ``build_receive_body``'s.
        """
        body = build_receive_body(**receive)
        pid = str(body["id"])
        try:
            self._call(
                "POST",
                self._payments_path(),
                parse=ignore_body,
                json_body=body,
                payment_id=pid,
                purpose=Purpose.CREATE,
            )
        except VoltageConflict as exc:
            if exc.type != "payment_exists":
                raise
            log.info("voltage.create_exists", payment_id=pid, status=exc.status)
        return pid

    def wait_for_invoice(self, payment_id: str, *, timeout: float = 10.0) -> Payment:
        """Read a fresh receive back until its BOLT11 is there or it is final.

        A 404 means "not visible yet", and transient errors are tolerated, until ``timeout``
        seconds have passed; then ``InvoiceNotReady`` (retryable) is raised. Auth and other
        non-retryable errors are raised at once. A final payment without an invoice (e.g. a
        receive that failed while generating) is returned as is: check its ``status``.
        """
        if timeout < 0:
            raise ValueError("timeout must be >= 0 seconds")
        path = self._payment_path(payment_id)
        clock, sleep = self.retry.clock, self.retry.sleep
        started = clock()
        deadline = started + timeout
        sleep(min(INVOICE_POLL_FIRST, timeout))
        pause = INVOICE_POLL_FIRST * 2
        last_status: str | None = None
        last_error: VoltageError | None = None
        polls = 0
        while True:
            polls += 1
            payment, error = self._read_back(path, payment_id, polls)
            if payment is not None:
                last_status = payment.status
                if payment.payment_request or payment.is_final:
                    return payment
            last_error = error or last_error
            server_wait = (error.retry_after or 0.0) if error is not None else 0.0
            remaining = deadline - clock()
            if server_wait > remaining or remaining <= 0:
                log.warning(
                    "voltage.invoice_not_ready",
                    payment_id=payment_id,
                    last_status=last_status,
                    attempt=polls,
                    retry_after=server_wait or None,
                )
                raise InvoiceNotReady(
                    payment_id,
                    last_status,
                    waited=clock() - started,
                    retry_after=server_wait or None,
                ) from last_error
            sleep(min(max(pause, server_wait), remaining))
            pause = min(pause * 2, INVOICE_POLL_CAP)

    def _read_back(
        self, path: str, payment_id: str, polls: int
    ) -> tuple[Payment | None, VoltageError | None]:
        """One read of a fresh receive: the payment, or the retryable error that stood in
        for it (neither on a 404: not visible yet). Other errors are raised."""
        try:
            payment = self._attempt("GET", path, parse_payment, None, None, Purpose.READ_BACK)
        except VoltageNotFound:
            return None, None
        except VoltageError as exc:
            if not exc.retryable:
                raise
            log.info(
                "voltage.invoice_wait_error",
                payment_id=payment_id,
                status=exc.status,
                error=type(exc).__name__,
                attempt=polls,
            )
            return None, exc
        return payment, None

    def create_receive(
        self, *, invoice_wait: float = 10.0, **receive: Unpack[ReceiveFields]
    ) -> Payment:
        """``submit_receive`` then ``wait_for_invoice``: the payment with its BOLT11."""
        return self.wait_for_invoice(self.submit_receive(**receive), timeout=invoice_wait)

    # --- read --------------------------------------------------------------------------------

    def get_payment(self, payment_id: str, *, purpose: Purpose = Purpose.OTHER) -> Payment:
        """One payment; ``VoltageNotFound`` on 404."""
        return self._call(
            "GET",
            self._payment_path(payment_id),
            parse=parse_payment,
            payment_id=payment_id,
            purpose=purpose,
        )

    def list_payments(
        self,
        filters: PaymentFilter = ALL_PAYMENTS,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        purpose: Purpose = Purpose.OTHER,
        **fields: Unpack[PaymentFilterFields],
    ) -> PaymentList:
        """One page of payments (cursor pagination).

        Without ``cursor`` this is the first page (``pagination=cursor``); pass the previous
        page's ``next_cursor`` with the *same* filter for the next one. ``fields`` are set
        over ``filters``, for a caller that names them loose.
        """
        params = build_list_params(filters, cursor=cursor, limit=limit, **fields)
        return self._call(
            "GET", self._payments_path(), parse=parse_page, params=params, purpose=purpose
        )

    def iter_payments(
        self,
        filters: PaymentFilter = ALL_PAYMENTS,
        *,
        max_pages: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        purpose: Purpose = Purpose.OTHER,
        **fields: Unpack[PaymentFilterFields],
    ) -> Iterator[Payment]:
        """Every matching payment, following cursors; each id is yielded once.

        A payment that moves while we page (sorting by ``updated_at``) can show up on two
        pages; only its first sighting is yielded.
        """
        if max_pages is not None and max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        pages = self._pages(
            filters.with_fields(**fields), max_pages=max_pages, limit=limit, purpose=purpose
        )
        seen_ids: set[str] = set()
        for page in pages:
            for payment in page.items:
                if payment.id not in seen_ids:
                    seen_ids.add(payment.id)
                    yield payment

    def _pages(
        self, filters: PaymentFilter, *, max_pages: int | None, limit: int, purpose: Purpose
    ) -> Iterator[PaymentList]:
        """The pages of one listing, following cursors until the last (or ``max_pages``)."""
        cursor: str | None = None
        seen_cursors: set[str] = set()
        pages = 0
        while True:
            page = self.list_payments(filters, cursor=cursor, limit=limit, purpose=purpose)
            pages += 1
            yield page
            if not page.has_more:
                return
            if page.next_cursor is None:
                log.warning("voltage.list_without_cursor", page=pages)
                return
            if page.next_cursor in seen_cursors:
                raise VoltageMalformedResponse(
                    f"Voltage returned an already used cursor on page {pages}; stopping"
                )
            if max_pages is not None and pages >= max_pages:
                return
            seen_cursors.add(page.next_cursor)
            cursor = page.next_cursor

    def get_history(self, payment_id: str) -> list[HistoryEvent]:
        """The payment's status timeline, oldest first as Voltage orders it."""
        return self._call(
            "GET",
            self._payment_path(payment_id) + "/history",
            parse=parse_history,
            payment_id=payment_id,
        )

    # --- paths -------------------------------------------------------------------------------

    def _payments_path(self) -> str:
        return f"{self._environment_path}/payments"

    def _payment_path(self, payment_id: str) -> str:
        check_text(payment_id, "payment_id")
        return f"{self._payments_path()}/{quote(payment_id, safe='')}"
