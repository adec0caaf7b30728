"""One JSON error shape for every 4xx and 5xx, and the handlers that produce it:

    {"error": {"type": "...", "detail": "...", "fields": [{"field": "...", "message": "..."}]}}

Also the request-body cap (an ASGI middleware, so an oversized body is refused before anything
reads it) and the catch-all that turns a bug into a 500 without a stack trace in the answer.
"""

from __future__ import annotations

import json
import math
import re
import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watcher.api.models import ErrorResponse
from watcher.durability import NotReplicated
from watcher.logging import get_logger
from watcher.settings import ConfigError
from watcher.voltage.errors import (
    VoltageAuthError,
    VoltageConflict,
    VoltageError,
    VoltageInvalidRequest,
    VoltageNotFound,
    VoltageTransientError,
)

log = get_logger(__name__)

DEFAULT_RETRY_AFTER = 5

# The `type` of an error answer for a bare status code (Starlette's own 404/405, etc.).
_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise from a route to answer with the error envelope."""

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


def log_failure(logger: Any, message: str, exc: BaseException, **fields: Any) -> None:
    """Log an unexpected exception with a plain traceback: never the frames' local variables
    (a rich or dict traceback would print them, and a local may hold a secret)."""
    logger.error(
        message,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        **fields,
    )


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming one field (e.g. `body.url`)."""
    return ApiError(422, "validation_error", f"{field}: {message}", fields=[(field, message)])


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def error_response(
    status: int,
    type: str,
    detail: str,
    *,
    fields: Sequence[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"type": type, "detail": detail}
    if fields:
        error["fields"] = [{"field": f, "message": m} for f, m in fields]
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- mapping Voltage and infrastructure errors ----------------------------------------------


def _retry_after(seconds: float | None) -> str:
    if seconds is None or seconds <= 0 or not math.isfinite(seconds):
        return str(DEFAULT_RETRY_AFTER)
    return str(max(1, min(3600, math.ceil(seconds))))


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
        return ApiError(
            503,
            "voltage_unavailable",
            f"Voltage is unavailable right now ({exc}); try again later",
            headers={"Retry-After": _retry_after(exc.retry_after)},
        )
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
        return ApiError(
            503,
            "voltage_unavailable",
            f"Voltage is unavailable right now ({exc}); try again later",
            headers={"Retry-After": _retry_after(exc.retry_after)},
        )
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


# --- handlers ---------------------------------------------------------------------------------


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) if loc else "request"


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return error_response(exc.status, exc.type, exc.detail, fields=exc.fields, headers=exc.headers)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    status = exc.status_code
    if status == 400 and exc.detail == "There was an error parsing the body":
        return error_response(
            400,
            "invalid_json",
            "the request body is not valid JSON (UTF-8)",
            fields=[("body", "not valid JSON")],
        )
    detail = exc.detail if isinstance(exc.detail, str) else _status_phrase(status)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 404 and detail == "Not Found":
        detail = "no such route; see /docs for the API"
    elif status == 405:
        if detail == "Method Not Allowed":
            detail = "this route does not accept that method"
        # Starlette names only the first matching route's methods; a path served by several
        # routes (GET and POST /v1/payments) must list them all.
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return error_response(status, _TYPES.get(status, "http_error"), detail, headers=headers)


_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# (path regex, {METHOD: names of its query parameters}) per documented path.
RouteTable = list[tuple[re.Pattern[str], dict[str, frozenset[str]]]]


def route_table(app: FastAPI) -> RouteTable:
    """What the OpenAPI document declares, by path: methods and their query parameters."""
    table: RouteTable | None = getattr(app.state, "route_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pieces = re.split(r"\{[^}]+\}", template)
            regex = re.compile("^" + "[^/]+".join(re.escape(p) for p in pieces) + "$")
            methods: dict[str, frozenset[str]] = {}
            for method, operation in operations.items():
                if method.upper() not in _HTTP_METHODS:
                    continue
                names = frozenset(
                    p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"
                )
                methods[method.upper()] = names
            table.append((regex, methods))
        app.state.route_table = table
    return table


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route of this path accepts."""
    found: set[str] = set()
    for regex, methods in route_table(request.app):
        if regex.match(request.scope["path"]):
            found |= set(methods)
    return sorted(found)


def reject_unknown_query(request: Request) -> None:
    """A dependency: a query parameter the route does not know, or one given twice, is a 422
    naming it (a typo like `?stauts=completed` must not silently return everything)."""
    if not request.query_params:
        return
    known: frozenset[str] | None = None
    for regex, methods in route_table(request.app):
        if regex.match(request.scope["path"]) and request.method in methods:
            known = methods[request.method]
            break
    if known is None:
        return
    unknown = sorted({name for name in request.query_params if name not in known})
    repeated = sorted({name for name in known if len(request.query_params.getlist(name)) > 1})
    if repeated and not unknown:
        raise ApiError(
            422,
            "validation_error",
            "query parameter(s) given more than once: " + ", ".join(map(repr, repeated)),
            fields=[(f"query.{name}", "given more than once") for name in repeated],
        )
    if unknown:
        raise ApiError(
            422,
            "validation_error",
            "unknown query parameter(s): "
            + ", ".join(repr(n) for n in unknown)
            + (f"; this route takes {', '.join(sorted(known))}" if known else "; none expected"),
            fields=[(f"query.{name}", "unknown parameter") for name in unknown],
        )


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = list(exc.errors())
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        reason = str((json_errors[0].get("ctx") or {}).get("error") or "JSON decode error")
        return error_response(
            400,
            "invalid_json",
            f"the request body is not valid JSON: {reason}",
            fields=[("body", reason)],
        )
    fields: list[tuple[str, str]] = []
    for error in errors:
        loc = tuple(error.get("loc") or ())
        message = str(error.get("msg") or "invalid").removeprefix("Value error, ")
        if loc == ("body",) and not _is_json(request) and error.get("type") != "missing":
            message = "expected a JSON object with Content-Type: application/json"
        elif loc == ("body",) and error.get("type") == "missing":
            message = "a JSON object is required"
        fields.append((_loc(loc), message))
    summary = "; ".join(f"{field}: {message}" for field, message in fields[:5])
    if len(fields) > 5:
        summary += f"; and {len(fields) - 5} more"
    return error_response(422, "validation_error", summary, fields=fields)


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


async def _on_redis_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, redis.RedisError)  # noqa: S101 - registered for RedisError only
    detail = redis_outage(exc)
    if detail is None:
        log_failure(log, "unexpected Redis error in the API", exc, path=request.url.path)
        return error_response(
            500, "internal_error", "an internal error occurred; it has been logged"
        )
    log.error("redis unavailable", path=request.url.path, error=type(exc).__name__)
    return error_response(
        503,
        "redis_unavailable",
        detail,
        headers={"Retry-After": str(DEFAULT_RETRY_AFTER)},
    )


async def _on_not_replicated(request: Request, exc: Exception) -> JSONResponse:
    """A watch or subscription no replica confirmed: stored, maybe not durable. The caller
    retries (creates and watches are idempotent); trusting it could lose it in a failover."""
    log.warning("write not confirmed by a replica", path=request.url.path, error=str(exc))
    return error_response(
        503,
        "not_replicated",
        f"{exc}: retry the same request (with the same client_id for a create)",
        headers={"Retry-After": "1"},
    )


async def _on_config_error(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "configuration_error", f"the watcher is misconfigured: {exc}")


async def _on_voltage_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VoltageError)  # noqa: S101
    api = voltage_error(exc)
    return error_response(api.status, api.type, api.detail, fields=api.fields, headers=api.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(redis.RedisError, _on_redis_error)
    app.add_exception_handler(ConfigError, _on_config_error)
    app.add_exception_handler(NotReplicated, _on_not_replicated)
    app.add_exception_handler(VoltageError, _on_voltage_error)


# --- ASGI middlewares -------------------------------------------------------------------------


async def _send_error(
    send: Send, status: int, type: str, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"error": {"type": type, "detail": detail}}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class CatchAllMiddleware:
    """The last line: anything unhandled becomes a logged 500 with the envelope and no
    traceback in the answer. Sits inside Starlette's ServerErrorMiddleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log_failure(log, "unhandled error in the API", exc, path=scope.get("path"))
            if not started:
                await _send_error(
                    send, 500, "internal_error", "an internal error occurred; it has been logged"
                )


class BodyLimitMiddleware:
    """Refuse request bodies larger than `max_bytes` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"the request body is larger than {self.max_bytes} bytes; send a smaller one"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad_request", "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await _send_error(send, 413, "payload_too_large", too_big)
                    return
        # Read the whole (small) body now, so a chunked upload cannot exceed the cap either.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, "payload_too_large", too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --- OpenAPI ----------------------------------------------------------------------------------

_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "Missing or wrong bearer token",
    404: "Not found",
    409: "Conflict",
    413: "The body is larger than the limit",
    422: "Validation failed; `fields` names each problem",
    500: "Internal error",
    502: "Voltage refused the watcher's credentials, or answered unexpectedly",
    503: "A dependency (Voltage or Redis) is unavailable; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all with the envelope."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }
