"""Bearer credentials for everything under /v1 (except Voltage's own webhooks).

Two kinds: the bootstrap tokens of WATCHER_API_TOKENS (admins), and API keys made with
`watcher keys create` (an app's, read or write, or an admin's), kept hashed in Redis. Every
configured token is compared, in constant time, with no early exit, so timing says nothing
about which token (or which prefix) came close; a key is found by its SHA-256. A refusal
never says why beyond "missing or wrong": no hint about which tokens or keys exist.
"""

from __future__ import annotations

import hmac
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from watcher.access.audit import token_actor
from watcher.access.principal import Principal
from watcher.access.principal import Scope as KeyScope
from watcher.api.context import ApiContext, get_context
from watcher.api.error_handlers import redis_error_response
from watcher.api.errors import ApiError

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description=(
        "An API key (`vwk_...`, from `watcher keys create`) or a token from WATCHER_API_TOKENS, "
        "as `Authorization: Bearer <key>`."
    ),
)

PROTECTED_PREFIX = "/v1/"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="voltage-watcher"'}
NO_TOKENS_DETAIL = (
    "the API has no tokens configured: the operator must set WATCHER_API_TOKENS "
    "(comma-separated, at least 16 characters each) or make a key with `watcher keys create`"
)


def token_matches(given: bytes, tokens: list[bytes]) -> bool:
    """True if `given` equals any of `tokens`; every token is compared whatever happens."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token)
    return matched


def authenticate(ctx: ApiContext, given: bytes) -> Principal | None:
    """Who `given` acts for: a bootstrap token is an admin; else an API key, or no one."""
    if token_matches(given, ctx.token_bytes):
        return Principal(token_actor(given), None)
    return ctx.runtime.tenants.authenticate(given)


_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_STATE = "principal"


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ctx: Annotated[ApiContext, Depends(get_context)],
) -> Principal:
    """FastAPI dependency: who the request acts for. 401 unless it carries a configured token
    or a live API key; 429 when that caller is over its request rate; 403 when a read-only
    key asks for a change."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise refusal(ctx)
    stashed = request.scope.get("state", {}).get(_STATE)
    principal = stashed if isinstance(stashed, Principal) else None
    if principal is None:
        # Starlette decodes headers as latin-1: encoding back gives the bytes that were sent.
        principal = authenticate(ctx, credentials.credentials.encode("latin-1"))
    if principal is None:
        raise refusal(ctx)
    _check_rate(ctx, principal)
    if principal.scope is KeyScope.READ and request.method not in _READS:
        raise ApiError(403, "forbidden", "this API key is read-only: it cannot change anything")
    return principal


def refusal(ctx: ApiContext) -> ApiError:
    """The 401; it says the API is unconfigured only when it is (a lookup made only here,
    off the path of a request that authenticates)."""
    unconfigured = not ctx.token_bytes and not ctx.runtime.tenants.any_keys()
    detail = NO_TOKENS_DETAIL if unconfigured else "missing or wrong bearer token"
    return ApiError(401, "unauthorized", detail, headers=_CHALLENGE)


def require_admin(principal: Annotated[Principal, Depends(require_token)]) -> Principal:
    """For routes over every app (apps, keys, the audit log): an app's key gets 403."""
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this needs an admin key; an app's key cannot use it")
    return principal


Caller = Annotated[Principal, Depends(require_token)]
Admin = Annotated[Principal, Depends(require_admin)]


def _check_rate(ctx: ApiContext, principal: Principal) -> None:
    rt = ctx.runtime
    wait = rt.rate_limiter.retry_after(principal.actor, rt.clock())
    if wait is not None:
        limiter = rt.rate_limiter
        raise ApiError(
            429,
            "rate_limited",
            f"this key made more than {limiter.rate:g} requests a second (bursts of "
            f"{limiter.burst}); try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


class BearerAuthMiddleware:
    """Checks the token before anything reads or parses the request, so an unauthenticated
    caller learns nothing (not even whether its body would validate). The route dependency
    above checks again and declares the scheme in the OpenAPI document."""

    def __init__(self, app: ASGIApp, ctx: ApiContext, exempt: frozenset[str]) -> None:
        self.app = app
        self.ctx = ctx
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(PROTECTED_PREFIX) or path in self.exempt:
            await self.app(scope, receive, send)
            return
        try:
            principal, response = await run_in_threadpool(self._check, bearer_of(scope))
        except redis.RedisError as exc:  # a key (or a refusal) needs Redis: out of reach is 503
            response = redis_error_response(exc, path)
            principal = None
        if principal is not None:
            scope.setdefault("state", {})[_STATE] = principal
            await self.app(scope, receive, send)
            return
        assert response is not None  # noqa: S101 - no principal comes with a refusal
        await response(scope, receive, send)

    def _check(self, given: bytes | None) -> tuple[Principal | None, Response | None]:
        principal = authenticate(self.ctx, given) if given is not None else None
        return principal, None if principal is not None else refusal(self.ctx).response()


def bearer_of(scope: Scope) -> bytes | None:
    """The bearer token a request carries, as sent."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return bytes(credentials.strip())
            return None
    return None
