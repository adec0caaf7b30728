"""FastAPI's request-validation errors as the API's answer: a body that is not JSON is a 400;
anything else a 422 whose `fields` name each problem in words a client can act on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from watcher.api.errors import ApiError

_SUMMARY_FIELDS = 5


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) if loc else "request"


def _message(error: Mapping[str, Any], *, body_is_json: bool) -> str:
    loc = tuple(error.get("loc") or ())
    if loc == ("body",) and not body_is_json and error.get("type") != "missing":
        return "expected a JSON object with Content-Type: application/json"
    if loc == ("body",) and error.get("type") == "missing":
        return "a JSON object is required"
    if error.get("type") == "string_pattern_mismatch" and _pattern(error) == r"\S":
        return "must hold something besides whitespace"
    return str(error.get("msg") or "invalid").removeprefix("Value error, ")


def _pattern(error: Mapping[str, Any]) -> str:
    return str((error.get("ctx") or {}).get("pattern", ""))


def validation_problem(errors: Sequence[Mapping[str, Any]], *, body_is_json: bool) -> ApiError:
    """`errors` as pydantic reports them; `body_is_json`: the request said it sent JSON."""
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        reason = str((json_errors[0].get("ctx") or {}).get("error") or "JSON decode error")
        return ApiError(
            400,
            "invalid_json",
            f"the request body is not valid JSON: {reason}",
            fields=[("body", reason)],
        )
    fields = [
        (_loc(tuple(e.get("loc") or ())), _message(e, body_is_json=body_is_json)) for e in errors
    ]
    summary = "; ".join(f"{field}: {message}" for field, message in fields[:_SUMMARY_FIELDS])
    if len(fields) > _SUMMARY_FIELDS:
        summary += f"; and {len(fields) - _SUMMARY_FIELDS} more"
    return ApiError(422, "validation_error", summary, fields=fields)
