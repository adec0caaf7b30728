"""The Voltage API simulator as an ASGI app: the payments API under `/v1`, a control surface
under `/_sim`.

Voltage API (`x-api-key` header; the full contract is in docs/simulator.md):

    POST /v1/organizations/{org}/environments/{env}/payments               202, empty body
    GET  /v1/organizations/{org}/environments/{env}/payments/{id}          200 Payment
    GET  /v1/organizations/{org}/environments/{env}/payments               200 page
    GET  /v1/organizations/{org}/environments/{env}/payments/{id}/history  200 {"events": [...]}

Control surface (no API key; not affected by faults; not counted in stats):

    POST   /_sim/payments/{id}/settle   body {"amount_msats": int}?   -> 200 payment, completed
    POST   /_sim/payments/{id}/fail     body {"code": str, "detail": str}?  (code default no_route)
    POST   /_sim/payments/{id}/expire                                  -> 200 payment, expired
           404 payment_not_found for an unknown id; 409 payment_final once the payment is final.
    POST   /_sim/payments/{id}/hide-from-filtered-lists   lists with statuses[] leave it out
    DELETE /_sim/payments/{id}/hide-from-filtered-lists   lets it back in
    POST   /_sim/payments/bulk          body {"count", "wallet_id", "expiration", "amount_msats"?,
                                              "organization_id"?, "environment_id"?}
                                        -> {"ids": [...]}: that many payments, already receiving
    GET    /_sim/payments               every payment, visible or not, with its invoice secrets
    GET    /_sim/payments/{id}          one of them
    POST   /_sim/faults                 body {"kind": "status"|"rate_limit"|"malformed"|"latency",
                                              "status", "count", "rate", "retry_after",
                                              "retry_after_ms", "latency", "method", "path",
                                              "route": "list"|"read"|"create"|"history",
                                              "error_type", "body"}            -> 201 fault
    GET    /_sim/faults                 {"faults": [...]} with remaining counts
    DELETE /_sim/faults                 remove all;  DELETE /_sim/faults/{id}: remove one
    GET    /_sim/stats                  {"requests", "by_route", "by_status", "per_payment"}
    POST   /_sim/stats/reset
    GET    /_sim/config, PATCH /_sim/config   {"not_found_window", "generating_delay",
                                               "updated_at_backdate", "list_lag"}
    POST   /_sim/reset                  forget payments, faults and stats
    GET    /_sim/health

Every error, FastAPI's own included, uses Voltage's envelope
`{"error": {"type", "code"?, "detail", "context"?}}`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from datetime import datetime
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watcher.simulator.config import CREATE_PERMISSIONS, SimulatorConfig
from watcher.simulator.create import (
    MAX_AMOUNT_MSATS,
    MAX_EXPIRATION,
    PAYMENT_KINDS,
    canonical_uuid,
    validate_create,
)
from watcher.simulator.errors import SimulatorError, error_envelope, invalid_data
from watcher.simulator.faults import FaultRegistry, FaultSpec, RequestStats
from watcher.simulator.listing import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    ListQuery,
    SortKey,
    SortOrder,
)
from watcher.simulator.payment import ALL_STATUSES, to_micros
from watcher.simulator.state import MAX_SEED_COUNT, SimulatorState

API_PREFIX = "/v1/organizations/{organization_id}/environments/{environment_id}"
MAX_BODY_BYTES = 1024 * 1024
# Past the limit the rest of a body is read and dropped (so the client sees the 413 instead of
# a reset connection), up to this much; beyond it the connection is simply not read further.
_DRAIN_LIMIT = 16 * MAX_BODY_BYTES

_READ = frozenset({"read"})
_METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")
_SINGLE_PARAMS = frozenset(
    {
        "pagination",
        "cursor",
        "limit",
        "offset",
        "wallet_id",
        "direction",
        "kind",
        "payment_category",
        "line_of_credit_id",
        "start_date",
        "end_date",
        "sort_key",
        "sort_order",
    }
)
_SORT_KEYS = {"created_at", "updated_at"}
_SORT_ORDERS = {"ASC", "DESC"}
_HTTP_ERROR_TYPES = {
    404: "not_found",
    405: "method_not_allowed",
}


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """A fresh simulator with its own payments, faults and stats."""
    state = SimulatorState(config)
    faults = FaultRegistry(random.Random(state.config.seed))
    stats = RequestStats()

    app = FastAPI(
        title="Voltage API simulator",
        description="Speaks the part of Voltage's payments API the watcher uses.",
        docs_url="/_sim/docs",
        redoc_url=None,
        openapi_url="/_sim/openapi.json",
    )
    app.state.simulator = state
    app.state.faults = faults
    app.state.stats = stats
    app.add_middleware(TrafficMiddleware, faults=faults, stats=stats)
    app.add_exception_handler(SimulatorError, _simulator_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
    app.include_router(_PaymentsApi(state).router)
    app.include_router(_ControlApi(state, faults, stats).router)
    return app


# --- Middleware ------------------------------------------------------------------------------


class TrafficMiddleware:
    """Applies faults to `/v1` requests before anything else runs, and counts every one."""

    def __init__(self, app: ASGIApp, faults: FaultRegistry, stats: RequestStats) -> None:
        self.app = app
        self.faults = faults
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        plan = self.faults.plan(method, path)
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)  # only this request waits
        if plan.fault is not None:
            status, headers, body = plan.fault.response()
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self.stats.record(method, path, status)
            return

        seen_status = 500  # what the client gets if the app dies before answering

        async def send_and_watch(message: Message) -> None:
            nonlocal seen_status
            if message["type"] == "http.response.start":
                seen_status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self.stats.record(method, path, seen_status)


# --- Error handlers --------------------------------------------------------------------------


def _envelope_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


async def _simulator_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimulatorError)  # noqa: S101 - registered for SimulatorError only
    return _envelope_response(exc.status, exc.envelope(), exc.headers or None)


async def _validation_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if len(loc) > 1 and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        problems.append((".".join(loc) or "body", str(error.get("msg", "invalid"))))
    error = invalid_data(problems or [("body", "invalid request")])
    return _envelope_response(error.status, error.envelope())


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    status = exc.status_code
    if status == 404:
        detail = f"no route {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    body = error_envelope(_HTTP_ERROR_TYPES.get(status, "http_error"), detail)
    return _envelope_response(status, body, dict(exc.headers or {}) or None)


async def _unexpected_error_handler(_request: Request, exc: Exception) -> Response:
    body = error_envelope("internal_error", f"simulator bug: {type(exc).__name__}")
    return _envelope_response(500, body)


# --- The Voltage API -------------------------------------------------------------------------


class _PaymentsApi:
    """Voltage's payment routes, checked in Voltage's order: key, access, body, conflict."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.router = APIRouter(prefix=API_PREFIX, tags=["Voltage API"])
        self.router.add_api_route(
            "/payments", self.create_payment, methods=["POST"], status_code=202
        )
        self.router.add_api_route("/payments", self.list_payments, methods=["GET"])
        self.router.add_api_route("/payments/{payment_id}", self.get_payment, methods=["GET"])
        self.router.add_api_route(
            "/payments/{payment_id}/history", self.payment_history, methods=["GET"]
        )

    async def create_payment(
        self, request: Request, organization_id: str, environment_id: str
    ) -> Response:
        """Create a receive. 202 with an empty body: the client reads it back by its own id."""
        self._authorize(request, organization_id, environment_id, CREATE_PERMISSIONS)
        if not _is_json(request.headers.get("content-type")):
            raise SimulatorError(
                415, "missing_content_type", "expected a JSON body (Content-Type: application/json)"
            )
        raw = await _read_body(request)
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise invalid_data([("body", f"not valid JSON: {exc}")]) from None
        new = validate_create(body)
        # Signing an invoice takes milliseconds of CPU: keep the event loop free for reads.
        await run_in_threadpool(self.state.create, organization_id, environment_id, new)
        return Response(status_code=202)

    async def get_payment(
        self, request: Request, organization_id: str, environment_id: str, payment_id: str
    ) -> JSONResponse:
        self._authorize(request, organization_id, environment_id, _READ)
        _check_payment_id(payment_id)
        return JSONResponse(self.state.get(organization_id, environment_id, payment_id))

    async def payment_history(
        self, request: Request, organization_id: str, environment_id: str, payment_id: str
    ) -> JSONResponse:
        self._authorize(request, organization_id, environment_id, _READ)
        _check_payment_id(payment_id)
        return JSONResponse(self.state.history(organization_id, environment_id, payment_id))

    async def list_payments(
        self, request: Request, organization_id: str, environment_id: str
    ) -> JSONResponse:
        self._authorize(request, organization_id, environment_id, _READ)
        query = parse_list_query(request.query_params.multi_items())
        return JSONResponse(self.state.list(organization_id, environment_id, query))

    def _authorize(
        self,
        request: Request,
        organization_id: str,
        environment_id: str,
        needed: frozenset[str],
    ) -> None:
        """401 for a missing or unknown key, 403 for the wrong environment or permission."""
        key = request.headers.get("x-api-key")
        permissions = self.state.permissions(key) if key else None
        if permissions is None:
            raise SimulatorError(
                401,
                "wrong_credentials",
                "missing x-api-key header" if not key else "unknown API key",
            )
        config = self.state.config
        if config.organization_id is not None and organization_id != config.organization_id:
            raise SimulatorError(
                403,
                "access_rights",
                f"this API key has no access to organization {organization_id}",
            )
        if config.environment_id is not None and environment_id != config.environment_id:
            raise SimulatorError(
                403,
                "access_rights",
                f"this API key has no access to environment {environment_id}",
            )
        if not permissions & needed:
            wanted = " or ".join(sorted(p.upper() for p in needed))
            raise SimulatorError(403, "access_rights", f"this API key lacks {wanted} permission")


def _check_payment_id(payment_id: str) -> None:
    if canonical_uuid(payment_id) is None:
        raise SimulatorError(
            400,
            "invalid_parameter",
            f"payment_id must be a UUID, got {payment_id[:64]!r}",
            context={"field": "payment_id"},
        )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_body(request: Request) -> bytes:
    too_large = SimulatorError(
        413, "payload_too_large", f"request body larger than {MAX_BODY_BYTES} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _DRAIN_LIMIT:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _DRAIN_LIMIT:
            break
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
    if size > MAX_BODY_BYTES:
        raise too_large
    return b"".join(chunks)


def _bad_parameter(field: str, detail: str) -> SimulatorError:
    return SimulatorError(400, "invalid_parameter", detail, context={"field": field})


def parse_list_query(items: list[tuple[str, str]]) -> ListQuery:
    """Read `GET .../payments` query parameters; anything unknown or malformed is a 400."""
    single: dict[str, str] = {}
    statuses: set[str] | None = None
    metadata: dict[str, str] = {}
    for key, value in items:
        if key == "statuses[]":
            if value not in ALL_STATUSES:
                expected = ", ".join(sorted(ALL_STATUSES))
                raise _bad_parameter(
                    "statuses[]", f"unknown status {value!r}; expected one of {expected}"
                )
            statuses = (statuses or set()) | {value}
        elif (match := _METADATA_PARAM.match(key)) is not None:
            metadata[match.group(1)] = value
        elif key in _SINGLE_PARAMS:
            if key in single:
                raise _bad_parameter(key, f"{key} given more than once")
            single[key] = value
        elif key == "statuses":
            raise _bad_parameter(
                "statuses",
                "repeat statuses[] with brackets: statuses[]=completed&statuses[]=failed",
            )
        else:
            raise _bad_parameter(key, f"unknown query parameter {key!r}")

    pagination = _choice(single, "pagination", {"offset", "cursor"})
    cursor = single.get("cursor")
    if cursor is not None and not cursor:
        raise SimulatorError(
            400,
            "invalid_cursor",
            "empty cursor",
            context={"field": "cursor", "recovery": "omit cursor and send pagination=cursor"},
        )
    for name in ("wallet_id", "line_of_credit_id"):
        if name in single and not single[name]:
            raise _bad_parameter(name, f"{name} must not be empty")
    return ListQuery(
        cursor_mode=cursor is not None or pagination == "cursor",
        cursor=cursor,
        limit=_int_param(single, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT),
        offset=_int_param(single, "offset", 0, 0, 2**32 - 1),
        wallet_id=single.get("wallet_id"),
        statuses=frozenset(statuses) if statuses is not None else None,
        direction=_choice(single, "direction", {"receive", "send"}),
        kind=_choice(single, "kind", set(PAYMENT_KINDS)),
        payment_category=_choice(single, "payment_category", {"standard", "treasury"}),
        line_of_credit_id=single.get("line_of_credit_id"),
        metadata=tuple(sorted(metadata.items())),
        start_micros=_date_param(single, "start_date"),
        end_micros=_date_param(single, "end_date"),
        sort_key=cast(SortKey, _choice(single, "sort_key", _SORT_KEYS) or "created_at"),
        sort_order=cast(SortOrder, _choice(single, "sort_order", _SORT_ORDERS) or "DESC"),
    )


def _choice(params: dict[str, str], name: str, allowed: set[str]) -> str | None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise _bad_parameter(name, f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise _bad_parameter(name, f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _date_param(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in value.upper():
        raise _bad_parameter(
            name, f"{name} must be an RFC 3339 date-time with offset, like 2025-02-12T21:21:21Z"
        )
    return to_micros(moment)


# --- The control surface ---------------------------------------------------------------------


class SettleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_msats: int | None = Field(default=None, gt=0)


class FailBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = "no_route"
    detail: str | None = Field(default=None, max_length=1000)


class ConfigPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    not_found_window: float | None = Field(default=None, ge=0, le=3600)
    generating_delay: float | None = Field(default=None, ge=0, le=3600)
    updated_at_backdate: float | None = Field(default=None, ge=0, le=3600)
    list_lag: float | None = Field(default=None, ge=0, le=3600)


class BulkBody(BaseModel):
    """`POST /_sim/payments/bulk`: pending payments for a benchmark, without a create each."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_SEED_COUNT)
    wallet_id: str = Field(min_length=1)
    expiration: int = Field(ge=1, le=MAX_EXPIRATION)
    amount_msats: int | None = Field(default=None, ge=0, le=MAX_AMOUNT_MSATS)
    organization_id: str | None = Field(default=None, min_length=1)
    environment_id: str | None = Field(default=None, min_length=1)


class _ControlApi:
    """`/_sim`: drive payments, inject faults, read counters. No key: it is a test harness."""

    def __init__(self, state: SimulatorState, faults: FaultRegistry, stats: RequestStats) -> None:
        self.state = state
        self.faults = faults
        self.stats = stats
        router = APIRouter(prefix="/_sim", tags=["Simulator control"])
        router.add_api_route("/health", self.health, methods=["GET"])
        router.add_api_route("/payments", self.list_payments, methods=["GET"])
        router.add_api_route("/payments/bulk", self.bulk, methods=["POST"])
        router.add_api_route("/payments/{payment_id}", self.get_payment, methods=["GET"])
        router.add_api_route("/payments/{payment_id}/settle", self.settle, methods=["POST"])
        router.add_api_route("/payments/{payment_id}/fail", self.fail, methods=["POST"])
        router.add_api_route("/payments/{payment_id}/expire", self.expire, methods=["POST"])
        hide = "/payments/{payment_id}/hide-from-filtered-lists"
        router.add_api_route(hide, self.hide, methods=["POST"])
        router.add_api_route(hide, self.unhide, methods=["DELETE"])
        router.add_api_route("/faults", self.add_fault, methods=["POST"], status_code=201)
        router.add_api_route("/faults", self.list_faults, methods=["GET"])
        router.add_api_route("/faults", self.clear_faults, methods=["DELETE"])
        router.add_api_route("/faults/{fault_id}", self.delete_fault, methods=["DELETE"])
        router.add_api_route("/stats", self.get_stats, methods=["GET"])
        router.add_api_route("/stats/reset", self.reset_stats, methods=["POST"])
        router.add_api_route("/config", self.get_config, methods=["GET"])
        router.add_api_route("/config", self.patch_config, methods=["PATCH"])
        router.add_api_route("/reset", self.reset, methods=["POST"])
        self.router = router

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "payments": len(self.state)}

    async def list_payments(self) -> dict[str, Any]:
        return self.state.raw_list()

    async def get_payment(self, payment_id: str) -> dict[str, Any]:
        return self.state.raw(payment_id)

    async def settle(self, payment_id: str, body: SettleBody | None = None) -> dict[str, Any]:
        return self.state.settle(payment_id, body.amount_msats if body else None)

    async def fail(self, payment_id: str, body: FailBody | None = None) -> dict[str, Any]:
        spec = body or FailBody()
        return self.state.fail(payment_id, spec.code, spec.detail)

    async def expire(self, payment_id: str) -> dict[str, Any]:
        return self.state.expire(payment_id)

    async def hide(self, payment_id: str) -> dict[str, Any]:
        return self.state.hide_from_filtered_lists(payment_id, hidden=True)

    async def unhide(self, payment_id: str) -> dict[str, Any]:
        return self.state.hide_from_filtered_lists(payment_id, hidden=False)

    async def bulk(self, body: BulkBody) -> dict[str, Any]:
        """Seed `count` receiving payments; ids default to the configured org and environment."""
        config = self.state.config
        organization_id = body.organization_id or config.organization_id
        environment_id = body.environment_id or config.environment_id
        missing = [
            (name, "required: the simulator accepts any, so name the one to seed")
            for name, value in (
                ("organization_id", organization_id),
                ("environment_id", environment_id),
            )
            if value is None
        ]
        if missing or organization_id is None or environment_id is None:
            raise invalid_data(missing)
        # Signing 10,000 invoices takes about a second: keep the event loop free.
        ids = await run_in_threadpool(
            self.state.seed_receiving,
            body.count,
            organization_id=organization_id,
            environment_id=environment_id,
            wallet_id=body.wallet_id,
            expiration=body.expiration,
            amount_msats=body.amount_msats,
        )
        return {"ids": ids}

    async def add_fault(self, spec: FaultSpec) -> dict[str, Any]:
        return self.faults.add(spec).describe()

    async def list_faults(self) -> dict[str, Any]:
        return {"faults": self.faults.describe()}

    async def clear_faults(self) -> dict[str, Any]:
        return {"deleted": self.faults.clear()}

    async def delete_fault(self, fault_id: str) -> dict[str, Any]:
        if not self.faults.remove(fault_id):
            raise SimulatorError(
                404,
                "fault_not_found",
                f"no fault with id {fault_id}",
                context={"fault_id": fault_id},
            )
        return {"deleted": 1}

    async def get_stats(self) -> dict[str, Any]:
        return self.stats.snapshot()

    async def reset_stats(self) -> dict[str, Any]:
        self.stats.reset()
        return self.stats.snapshot()

    async def get_config(self) -> dict[str, Any]:
        return self.state.config_snapshot()

    async def patch_config(self, patch: ConfigPatch) -> dict[str, Any]:
        return self.state.update_config(
            not_found_window=patch.not_found_window,
            generating_delay=patch.generating_delay,
            updated_at_backdate=patch.updated_at_backdate,
            list_lag=patch.list_lag,
        )

    async def reset(self) -> dict[str, Any]:
        self.state.reset()
        self.faults.clear()
        self.stats.reset()
        return {"reset": True}
