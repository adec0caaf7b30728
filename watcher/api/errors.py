"""The one JSON error shape for every 4xx and 5xx, and the exception a route raises for it:

    {"error": {"type": "...", "detail": "...", "fields": [{"field": "...", "message": "..."}]}}

The handlers that turn other exceptions into it are in `error_handlers.py`; the middlewares
that answer before any route runs, in `middleware.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from watcher.api.response_models import ErrorResponse

# The detail of every 500 for a bug: what went wrong is in the log, never in the answer.
INTERNAL_ERROR = "an internal error occurred; it has been logged"


class ApiError(Exception):
    """Raise from a route to answer with the error envelope; `response()` renders it."""

    def __init__(
        self,
        status: int,
        type: str,
        detail: str,
        *,
        fields: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type
        self.detail = detail
        self.fields = list(fields) if fields else None
        self.headers = dict(headers) if headers else None

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"type": self.type, "detail": self.detail}
        if self.fields:
            error["fields"] = [{"field": f, "message": m} for f, m in self.fields]
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming one field (e.g. `body.url`)."""
    return ApiError(422, "validation_error", f"{field}: {message}", fields=[(field, message)])


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


# --- OpenAPI ----------------------------------------------------------------------------------

_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "Missing or wrong bearer token",
    403: "This key may not do this (a read-only key's change, or an admin-only route)",
    404: "Not found",
    409: "Conflict",
    413: "The body is larger than the limit",
    422: "Validation failed; `fields` names each problem",
    500: "Internal error",
    502: "Voltage refused the watcher's credentials, or answered unexpectedly",
    503: "A dependency (Voltage or Redis) is unavailable; see Retry-After",
    429: "Too many requests from this token: wait `Retry-After` seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all with the envelope."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }
