"""The HTTP API as an ASGI app (FastAPI): `create_app()` wires the routes to a runtime.

Routes are plain `def` functions: FastAPI runs them in its thread pool, which suits the
synchronous Redis and Voltage clients the rest of the watcher uses. Anything that only needs
to happen soon (handing deliveries to the workers, re-reading a payment Voltage told us about)
runs after the answer as a background task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Depends, FastAPI

from watcher import __version__
from watcher.api import (
    ingress,
    routes_audit,
    routes_console,
    routes_deliveries,
    routes_event_types,
    routes_health,
    routes_payments,
    routes_subscription_health,
    routes_subscriptions,
    routes_tenants,
)
from watcher.api.auth import BearerAuthMiddleware, require_token
from watcher.api.context import ApiContext, CeleryKick, Kick
from watcher.api.declared_routes import reject_unknown_query
from watcher.api.error_handlers import install_error_handlers
from watcher.api.errors import error_responses
from watcher.api.metrics import build_registry
from watcher.api.middleware import BodyLimitMiddleware, CatchAllMiddleware
from watcher.logging import get_logger
from watcher.runtime import Runtime
from watcher.settings import Settings, get_settings

log = get_logger(__name__)


INGRESS_PATH = "/v1" + ingress.INGRESS_ROUTE

RuntimeSource = Settings | Runtime | Callable[[], Runtime] | None

_DESCRIPTION = """Watches Voltage Lightning payments and delivers signed webhooks.

Everything under `/v1` needs `Authorization: Bearer <token>` with a token from
`WATCHER_API_TOKENS`, except `POST /v1/voltage/webhooks` (Voltage signs those itself).
Every error answer has one shape: `{"error": {"type", "detail", "fields"?}}`.
Payments and deliveries list newest first, subscriptions and events oldest first;
every list is paginated with `limit` and `cursor`: pass
a page's `next_cursor` to get the next page; `null` means there is no more.
"""


def _runtime(source: RuntimeSource) -> tuple[Runtime, bool]:
    """The runtime, and whether this app made it (and so closes it)."""
    if isinstance(source, Runtime):
        return source, False
    if isinstance(source, Settings):
        return Runtime.from_settings(source), True
    if source is None:
        return Runtime.from_settings(get_settings()), True
    return source(), False


def create_app(
    source: RuntimeSource = None,
    *,
    invoice_wait: float | None = None,
    max_body_bytes: int | None = None,
    webhook_tolerance: int | None = None,
    kick: Kick | None = None,
) -> FastAPI:
    """The API for a runtime (or one built from settings; default: the environment's).

    `invoice_wait`: how long `POST /v1/payments` waits for Voltage's invoice before answering
    202; `max_body_bytes`: the request-body cap (413 above it); `webhook_tolerance`: seconds
    a Voltage webhook's timestamp may be off. Each defaults to its setting
    (WATCHER_API_INVOICE_WAIT, WATCHER_API_MAX_BODY_BYTES, VOLTAGE_WEBHOOK_TOLERANCE).
    `kick`: hands due deliveries to the workers now (default: through Celery).
    """
    runtime, owns_runtime = _runtime(source)
    settings = runtime.settings
    if invoice_wait is None:
        invoice_wait = settings.watcher_api_invoice_wait
    if max_body_bytes is None:
        max_body_bytes = settings.watcher_api_max_body_bytes
    if webhook_tolerance is None:
        webhook_tolerance = settings.voltage_webhook_tolerance
    celery_kick = CeleryKick(settings) if kick is None else None
    ctx = ApiContext(
        runtime=runtime,
        invoice_wait=invoice_wait,
        webhook_tolerance=webhook_tolerance,
        kick=kick or celery_kick or (lambda _rt: None),
        token_bytes=[t.get_secret_value().encode() for t in settings.watcher_api_tokens],
    )
    app = FastAPI(
        title="voltage-watcher",
        version=__version__,
        description=_DESCRIPTION,
        # No Swagger UI or ReDoc: they load their script from a CDN, unchecked by any CSP, on
        # the origin that serves the console. The schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(ctx, celery_kick, owns_runtime=owns_runtime),
    )
    app.state.ctx = ctx
    app.state.metrics = build_registry(runtime)
    install_error_handlers(app)
    _add_middleware(app, ctx, max_body_bytes)
    _include_routers(app)
    routes_event_types.declare_webhooks(app)
    return app


def _lifespan(
    ctx: ApiContext, celery_kick: CeleryKick | None, *, owns_runtime: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Says at start what is switched off, and closes at the end what this app opened."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not ctx.token_bytes:
            log.warning("WATCHER_API_TOKENS is empty: every /v1 route answers 401 until it is set")
        if ctx.runtime.settings.voltage_webhook_secret is None:
            log.info("VOLTAGE_WEBHOOK_SECRET is not set: the Voltage webhook ingress is off")
        log.info("api started", tokens=len(ctx.token_bytes))
        try:
            yield
        finally:
            if celery_kick is not None:
                celery_kick.close()
            if owns_runtime:
                ctx.runtime.close()

    return lifespan


def _add_middleware(app: FastAPI, ctx: ApiContext, max_body_bytes: int) -> None:
    # Added last = outermost: catch-all, then the token check, then the body cap.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, ctx=ctx, exempt=frozenset({INGRESS_PATH}))
    app.add_middleware(CatchAllMiddleware)


def _include_routers(app: FastAPI) -> None:
    protected = [Depends(require_token), Depends(reject_unknown_query)]
    limited = error_responses(403, 429)
    routers = (
        routes_payments,
        routes_subscriptions,
        routes_subscription_health,
        routes_deliveries,
        routes_event_types,
        routes_audit,
        routes_tenants,
    )
    for routes in routers:
        app.include_router(routes.router, prefix="/v1", dependencies=protected, responses=limited)
    app.include_router(ingress.router, prefix="/v1")
    app.include_router(routes_health.router)
    app.include_router(routes_console.router)
