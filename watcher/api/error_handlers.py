"""The exception handlers that give every failure the one error shape (`errors.py`): a route's
`ApiError`, Starlette's own 404/405, validation errors, Redis and Voltage failures, a
misconfiguration, a write no replica confirmed."""

from __future__ import annotations

from http import HTTPStatus

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from watcher.api.declared_routes import allowed_methods
from watcher.api.dependency_errors import redis_outage, redis_unavailable, voltage_error
from watcher.api.errors import INTERNAL_ERROR, ApiError
from watcher.api.failure_log import log_failure
from watcher.api.validation_messages import validation_problem
from watcher.durability import NotReplicated
from watcher.logging import get_logger
from watcher.settings import ConfigError
from watcher.voltage.errors import VoltageError

log = get_logger(__name__)

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


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return exc.response()


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    status = exc.status_code
    if status == 400 and exc.detail == "There was an error parsing the body":
        return ApiError(
            400,
            "invalid_json",
            "the request body is not valid JSON (UTF-8)",
            fields=[("body", "not valid JSON")],
        ).response()
    detail = exc.detail if isinstance(exc.detail, str) else _status_phrase(status)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 404 and detail == "Not Found":
        detail = "no such route; see /openapi.json for the API"
    elif status == 405:
        if detail == "Method Not Allowed":
            detail = "this route does not accept that method"
        # Starlette names only the first matching route's methods; a path served by several
        # routes (GET and POST /v1/payments) must list them all.
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return ApiError(status, _TYPES.get(status, "http_error"), detail, headers=headers).response()


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    return validation_problem(list(exc.errors()), body_is_json=_is_json(request)).response()


async def _on_redis_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, redis.RedisError)  # noqa: S101 - registered for RedisError only
    return redis_error_response(exc, request.url.path)


def redis_error_response(exc: redis.RedisError, path: str) -> JSONResponse:
    """503 with Retry-After when Redis is out of reach (the caller may retry), else a 500."""
    detail = redis_outage(exc)
    if detail is None:
        log_failure(log, "unexpected Redis error in the API", exc, path=path)
        return ApiError(500, "internal_error", INTERNAL_ERROR).response()
    log.error("redis unavailable", path=path, error=type(exc).__name__)
    return redis_unavailable(detail).response()


async def _on_not_replicated(request: Request, exc: Exception) -> JSONResponse:
    """A watch or subscription no replica confirmed: stored, maybe not durable. The caller
    retries (creates and watches are idempotent); trusting it could lose it in a failover."""
    log.warning("write not confirmed by a replica", path=request.url.path, error=str(exc))
    return ApiError(
        503,
        "not_replicated",
        f"{exc}: retry the same request (with the same client_id for a create)",
        headers={"Retry-After": "1"},
    ).response()


async def _on_config_error(_request: Request, exc: Exception) -> JSONResponse:
    return ApiError(500, "configuration_error", f"the watcher is misconfigured: {exc}").response()


async def _on_voltage_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VoltageError)  # noqa: S101
    return voltage_error(exc).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(redis.RedisError, _on_redis_error)
    app.add_exception_handler(ConfigError, _on_config_error)
    app.add_exception_handler(NotReplicated, _on_not_replicated)
    app.add_exception_handler(VoltageError, _on_voltage_error)
