"""Errors the simulator answers, in Voltage's envelope `{"error": {type, code?, detail,
context?}}`; optional members are left out rather than sent as null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SimulatorError(Exception):
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


def invalid_data(errors: list[tuple[str, str]]) -> SimulatorError:
    """422 naming every bad field, so a client fixes them all in one round."""
    fields = list(dict.fromkeys(name for name, _ in errors))
    return SimulatorError(
        422,
        "invalid_data",
        "; ".join(f"{name}: {message}" for name, message in errors),
        context={
            "fields": fields,
            "errors": [{"field": name, "message": message} for name, message in errors],
        },
    )
