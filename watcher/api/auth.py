"""Bearer tokens for everything under /v1 (except Voltage's own webhooks).

Tokens come from WATCHER_API_TOKENS. Every configured token is compared, in constant time, with
no early exit, so timing says nothing about which token (or which prefix) came close. A
refusal never says why beyond "missing or wrong": no hint about which tokens exist.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from watcher.access.audit import token_actor
from watcher.api.context import ApiContext, get_context
from watcher.api.errors import ApiError

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="A token from WATCHER_API_TOKENS, as `Authorization: Bearer <token>`.",
)

PROTECTED_PREFIX = "/v1/"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="voltage-watcher"'}
NO_TOKENS_DETAIL = (
    "the API has no tokens configured: the operator must set WATCHER_API_TOKENS "
    "(comma-separated, at least 16 characters each)"
)


def token_matches(given: bytes, tokens: list[bytes]) -> bool:
    """True if `given` equals any of `tokens`; every token is compared whatever happens."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token)
    return matched


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ctx: Annotated[ApiContext, Depends(get_context)],
) -> None:
    """FastAPI dependency: 401 unless the request carries a configured bearer token; 429
    when that token is over its request rate (WATCHER_API_RATE_LIMIT)."""
    tokens = ctx.token_bytes
    if not tokens:
        raise ApiError(401, "unauthorized", NO_TOKENS_DETAIL, headers=_CHALLENGE)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "missing or wrong bearer token", headers=_CHALLENGE)
    # Starlette decodes headers as latin-1: encoding back gives the bytes that were sent.
    given = credentials.credentials.encode("latin-1")
    if not token_matches(given, tokens):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token", headers=_CHALLENGE)
    rt = ctx.runtime
    wait = rt.rate_limiter.retry_after(token_actor(given), rt.clock())
    if wait is not None:
        limiter = rt.rate_limiter
        raise ApiError(
            429,
            "rate_limited",
            f"this token made more than {limiter.rate:g} requests a second (bursts of "
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
        tokens = self.ctx.token_bytes
        detail = NO_TOKENS_DETAIL if not tokens else "missing or wrong bearer token"
        if tokens:
            given = bearer_of(scope)
            if given is not None and token_matches(given, tokens):
                await self.app(scope, receive, send)
                return
        response = ApiError(401, "unauthorized", detail, headers=_CHALLENGE).response()
        await response(scope, receive, send)


def bearer_of(scope: Scope) -> bytes | None:
    """The bearer token a request carries, as sent."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return bytes(credentials.strip())
            return None
    return None
