"""Typed errors built from Voltage's error envelope.

Callers branch on the class (retry or not, page an operator or not), never on `detail`.
"""

from __future__ import annotations

from typing import Any


class VoltageError(Exception):
    """Any failure talking to Voltage. `retryable` says whether trying again can help."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        detail: str | None = None,
        context: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.detail = detail
        self.context = context
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments; rebuild without calling __init__ so
        # every subclass survives pickling (Celery, multiprocessing).
        return (_rebuild_error, (type(self), self.args, self.__dict__.copy()))


def _rebuild_error(
    cls: type[VoltageError], args: tuple[Any, ...], state: dict[str, Any]
) -> VoltageError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class VoltageAuthError(VoltageError):
    """401/403: bad key or missing permission. Affects every call; never retried."""


class VoltageNotFound(VoltageError):
    """404: no such payment, or not visible yet right after a create."""


class VoltageConflict(VoltageError):
    """409: the payment id is already used."""


class VoltageInvalidRequest(VoltageError):
    """400/413/415/422: the request itself is wrong; retrying the same request cannot help."""


class VoltageTransientError(VoltageError):
    """429, 5xx, timeouts, connection errors: worth another try after a pause."""

    retryable = True


class VoltageMalformedResponse(VoltageTransientError):
    """A 2xx answer we could not parse. Logged, counted and retried, never fatal."""


class InvoiceNotReady(VoltageError):
    """The payment was accepted but its BOLT11 invoice did not show up in time.

    Retryable: the payment exists (or soon will) under ``payment_id``; read it again later.
    ``last_status`` is the last status seen, or None when every read answered 404.
    """

    retryable = True

    def __init__(
        self,
        payment_id: str,
        last_status: str | None,
        *,
        waited: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        seen = last_status if last_status is not None else "not visible yet"
        after = f" after {waited:.1f}s" if waited is not None else ""
        super().__init__(
            f"invoice for payment {payment_id} not ready{after} (last status: {seen})",
            retry_after=retry_after,
        )
        self.payment_id = payment_id
        self.last_status = last_status


def error_from_response(
    status: int, body: Any, retry_after: float | None, *, where: str | None = None
) -> VoltageError:
    """Map an HTTP error status and its (maybe missing) envelope to the right class.

    ``where`` (e.g. ``"GET /v1/.../payments/ID"``) is added to the message; never pass headers.
    """
    envelope = body.get("error") if isinstance(body, dict) else None
    if not isinstance(envelope, dict):
        envelope = {}
    err_type = _str_or_none(envelope.get("type"))
    code = _str_or_none(envelope.get("code"))
    detail = _str_or_none(envelope.get("detail"))
    context = envelope.get("context") if isinstance(envelope.get("context"), dict) else None
    cls: type[VoltageError]
    if status in (401, 403):
        cls = VoltageAuthError
    elif status == 404:
        cls = VoltageNotFound
    elif status == 409:
        cls = VoltageConflict
    elif status == 429 or status >= 500:
        cls = VoltageTransientError
    elif 400 <= status < 500:
        cls = VoltageInvalidRequest
    else:
        cls = VoltageMalformedResponse
    summary = f"Voltage answered {status}"
    if err_type:
        summary += f" {err_type}"
    if code:
        summary += f"/{code}"
    if where:
        summary += f" on {where}"
    if detail:
        summary += f": {detail[:300]}"
    return cls(
        summary,
        status=status,
        type=err_type,
        code=code,
        detail=detail,
        context=context,
        retry_after=retry_after,
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
