"""The audit log over HTTP, and the dependency through which routes write to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from watcher.access.audit import AuditAction, AuditLog
from watcher.api.auth import Admin, Caller
from watcher.api.context import ApiContext, get_context
from watcher.api.errors import error_responses
from watcher.api.field_types import StreamCursor
from watcher.api.pagination import cursor_checked
from watcher.api.response_models import AuditEntryOut, AuditPage

router = APIRouter(tags=["audit"])
Ctx = Annotated[ApiContext, Depends(get_context)]


@dataclass(frozen=True)
class AuditTrail:
    """The audit log, bound to the token that made this request."""

    log: AuditLog
    actor: str
    ctx: ApiContext

    def record(self, action: AuditAction, target: str, detail: str = "") -> None:
        self.log.record(self.actor, action, target, self.ctx.runtime.clock(), detail)


def audit_trail(caller: Caller, ctx: Ctx) -> AuditTrail:
    return AuditTrail(ctx.runtime.audit, caller.actor, ctx)


Audit = Annotated[AuditTrail, Depends(audit_trail)]


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="Who changed what, and when, newest first",
    description=(
        "One entry per change made through the API or the CLI: creates, watches, subscription "
        "changes and deletes, secret rotations, tests, recovers and redeliveries. An API "
        "token appears as its id (`tok_` + 16 hex digits of its SHA-256), an API key as its id "
        "(`key_...`), never itself. Admin keys only."
    ),
    responses=error_responses(401, 403, 422, 500, 503),
)
def list_audit(
    ctx: Ctx,
    _admin: Admin,
    actor: Annotated[str | None, Query(max_length=64, description="Only this actor")] = None,
    action: Annotated[AuditAction | None, Query(description="Only this action")] = None,
    target: Annotated[
        str | None, Query(max_length=128, description="Only changes of this object")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[StreamCursor | None, Query()] = None,
) -> AuditPage:
    with cursor_checked():
        items, next_cursor = ctx.runtime.audit.page(
            cursor=cursor,
            limit=limit,
            actor=actor,
            action=action.value if action else None,
            target=target,
        )
    return AuditPage(
        items=[AuditEntryOut.model_validate(e.to_public()) for e in items],
        next_cursor=next_cursor,
    )
