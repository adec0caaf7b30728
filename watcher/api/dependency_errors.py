"""What a client is told when a dependency fails: Voltage's errors and a Redis that cannot
serve, each as the API's error answer (never with a credential in it)."""

from __future__ import annotations

import math

import redis

from watcher.api.errors import ApiError
from watcher.voltage.errors import (
    VoltageAuthError,
    VoltageConflict,
    VoltageError,
    VoltageInvalidRequest,
    VoltageNotFound,
    VoltageTransientError,
)

DEFAULT_RETRY_AFTER = 5


def _retry_after(seconds: float | None) -> str:
    if seconds is None or seconds <= 0 or not math.isfinite(seconds):
        return str(DEFAULT_RETRY_AFTER)
    return str(max(1, min(3600, math.ceil(seconds))))


def _voltage_unavailable(exc: VoltageError) -> ApiError:
    return ApiError(
        503,
        "voltage_unavailable",
        f"Voltage is unavailable right now ({exc}); try again later",
        headers={"Retry-After": _retry_after(exc.retry_after)},
    )


def voltage_error(exc: VoltageError, *, not_found_detail: str | None = None) -> ApiError:
    """A clean answer for a Voltage failure; the message never carries the API key."""
    if isinstance(exc, VoltageAuthError):
        return ApiError(
            502,
            "voltage_auth_error",
            "Voltage refused the watcher's credentials or permissions "
            f"(HTTP {exc.status}); the operator must check VOLTAGE_API_KEY, "
            "VOLTAGE_ORGANIZATION_ID and VOLTAGE_ENVIRONMENT_ID",
        )
    if isinstance(exc, VoltageTransientError):
        return _voltage_unavailable(exc)
    if isinstance(exc, VoltageInvalidRequest):
        fields = _voltage_fields(exc)
        detail = exc.detail or str(exc)
        return ApiError(
            422, "voltage_invalid_request", f"Voltage refused the request: {detail}", fields=fields
        )
    if isinstance(exc, VoltageNotFound):
        return ApiError(404, "not_found", not_found_detail or f"Voltage answered 404: {exc}")
    if isinstance(exc, VoltageConflict):
        return ApiError(409, "voltage_conflict", f"Voltage reported a conflict: {exc}")
    if exc.retryable:
        return _voltage_unavailable(exc)
    return ApiError(502, "voltage_error", f"Voltage answered unexpectedly: {exc}")


def _voltage_fields(exc: VoltageError) -> list[tuple[str, str]] | None:
    """Voltage's 422 names fields in `context.errors` / `context.fields`; pass them on."""
    context = exc.context or {}
    found: list[tuple[str, str]] = []
    errors = context.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict) and isinstance(item.get("field"), str):
                found.append((f"body.{item['field']}", str(item.get("message") or "invalid")))
    if not found and isinstance(context.get("fields"), list):
        found = [(f"body.{name}", "refused by Voltage") for name in context["fields"]]
    return found or None


# Redis failures a client can wait out: (exception classes, what to tell them). Anything else
# (WRONGTYPE, a script error, a bad argument) is a bug or corrupt data, not an outage: a logged
# 500, so nobody goes looking for a Redis that answered perfectly well.
_REDIS_OUTAGES: tuple[tuple[tuple[type[redis.RedisError], ...], str], ...] = (
    (
        (redis.AuthenticationError, redis.exceptions.AuthorizationError),
        "the watcher's Redis refused its credentials; the operator must check WATCHER_REDIS_URL",
    ),
    ((redis.BusyLoadingError,), "the watcher's Redis is loading its data; try again shortly"),
    (
        (redis.ConnectionError, redis.TimeoutError),
        "the watcher's Redis is unreachable; try again later",
    ),
    (
        (
            redis.ReadOnlyError,
            redis.exceptions.TryAgainError,
            redis.exceptions.ClusterDownError,
        ),
        "the watcher's Redis cannot take writes right now (a failover?); try again shortly",
    ),
    (
        (redis.exceptions.OutOfMemoryError,),
        "the watcher's Redis is out of memory; the operator must free some or raise maxmemory",
    ),
)


def redis_outage(exc: redis.RedisError) -> str | None:
    """What to say when this error means Redis cannot serve right now; None for the rest."""
    for classes, detail in _REDIS_OUTAGES:
        if isinstance(exc, classes):
            return detail
    return None


def redis_unavailable(detail: str) -> ApiError:
    """The 503 for a Redis outage `redis_outage` named."""
    return ApiError(
        503, "redis_unavailable", detail, headers={"Retry-After": str(DEFAULT_RETRY_AFTER)}
    )
