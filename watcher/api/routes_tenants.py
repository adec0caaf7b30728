"""Apps and API keys over HTTP, for admins: what `watcher apps` and `watcher keys` do."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from watcher.access.audit import AuditAction
from watcher.access.principal import Scope
from watcher.access.tenants import (
    ApiKey,
    AppNotFound,
    KeyNotFound,
    TenantError,
    new_key,
    retire_app,
)
from watcher.api.auth import Admin
from watcher.api.context import ApiContext, get_context
from watcher.api.errors import ApiError, error_responses, invalid, not_found
from watcher.api.request_models import AppCreate, AppName, KeyCreate
from watcher.api.response_models import (
    AppDeleted,
    AppDetail,
    AppOut,
    AppPage,
    KeyOut,
    KeyPage,
    KeyWithSecret,
)
from watcher.api.routes_audit import Audit

router = APIRouter()

Ctx = Annotated[ApiContext, Depends(get_context)]
NamePath = Annotated[AppName, Path(description="The app's name")]
KeyIdPath = Annotated[str, Path(pattern=r"^key_[0-9a-f]{16}$", description="The key's id")]
_ADMIN = error_responses(401, 403, 404, 422, 500, 503)


def key_out(
    ctx: ApiContext, key: ApiKey, secret: str | None = None, names: dict[str, str] | None = None
) -> KeyOut:
    """`names` (app id -> name) lets a list read the apps once instead of once per key."""
    if names is None:
        app = ctx.runtime.tenants.app_by_id(key.app_id) if key.app_id else None
        names = {app.id: app.name} if app else {}
    data = key.to_public(names.get(key.app_id))
    if secret is None:
        return KeyOut.model_validate(data)
    return KeyWithSecret.model_validate({**data, "key": secret})


@router.post(
    "/apps", status_code=201, response_model=AppOut, tags=["apps"], summary="Make an app",
    responses=error_responses(400, 401, 403, 409, 413, 422, 500, 503),
)  # fmt: skip
def create_app(body: AppCreate, ctx: Ctx, _admin: Admin, audit: Audit) -> AppOut:
    rt = ctx.runtime
    try:
        app = rt.tenants.create_app(body.name, rt.clock())
    except TenantError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    audit.record(AuditAction.APP_CREATED, app.id, app.name)
    return AppOut.model_validate(app.to_public())


@router.get("/apps", response_model=AppPage, tags=["apps"], summary="Every app",
            responses=_ADMIN)  # fmt: skip
def list_apps(ctx: Ctx, _admin: Admin) -> AppPage:
    apps = ctx.runtime.tenants.apps()
    return AppPage(items=[AppOut.model_validate(a.to_public()) for a in apps])


@router.get("/apps/{name}", response_model=AppDetail, tags=["apps"],
            summary="One app and its keys", responses=_ADMIN)  # fmt: skip
def get_app(name: NamePath, ctx: Ctx, _admin: Admin) -> AppDetail:
    tenants = ctx.runtime.tenants
    try:
        app = tenants.app_named(name)
    except AppNotFound as exc:
        raise not_found(str(exc)) from None
    keys = [key_out(ctx, k, names={app.id: app.name}) for k in tenants.keys_of(app.id)]
    return AppDetail.model_validate({**app.to_public(), "keys": keys})


@router.delete(
    "/apps/{name}", response_model=AppDeleted, tags=["apps"], responses=_ADMIN,
    summary="Delete an app: its keys revoked, its subscriptions disabled, its history kept",
)  # fmt: skip
def delete_app(name: NamePath, ctx: Ctx, _admin: Admin, audit: Audit) -> AppDeleted:
    rt = ctx.runtime
    try:
        app, revoked, disabled = retire_app(rt.tenants, rt.subscriptions, name, rt.clock())
    except AppNotFound as exc:
        raise not_found(str(exc)) from None
    audit.record(AuditAction.APP_DELETED, app.id, f"{app.name}: {len(revoked)} keys revoked")
    return AppDeleted(
        app=AppOut.model_validate(app.to_public()),
        revoked_keys=revoked,
        disabled_subscriptions=disabled,
    )


@router.post(
    "/keys", status_code=201, response_model=KeyWithSecret, tags=["keys"],
    summary="Make an API key (shown once)", responses=error_responses(400, 401, 403, 404, 413,
                                                                      422, 500, 503),
)  # fmt: skip
def create_key(body: KeyCreate, ctx: Ctx, _admin: Admin, audit: Audit) -> KeyOut:
    if (body.app is None) == (not body.admin):
        raise invalid("body.app", "give an app's name, or `admin: true` (not both)")
    rt = ctx.runtime
    try:
        key, secret = new_key(rt.tenants, body.app, Scope(body.scope), rt.clock())
    except AppNotFound as exc:
        raise not_found(str(exc)) from None
    audit.record(AuditAction.KEY_CREATED, key.id, f"{body.app or 'admin'}, {body.scope}")
    return key_out(ctx, key, secret)


@router.get("/keys", response_model=KeyPage, tags=["keys"], summary="API keys (never the keys)",
            responses=_ADMIN)  # fmt: skip
def list_keys(
    ctx: Ctx, _admin: Admin, app: Annotated[AppName | None, Query(description="Only its")] = None
) -> KeyPage:
    tenants = ctx.runtime.tenants
    try:
        keys = tenants.keys_of(tenants.app_named(app).id) if app else tenants.all_keys()
    except AppNotFound as exc:
        raise not_found(str(exc)) from None
    names = tenants.app_names()
    return KeyPage(items=[key_out(ctx, k, names=names) for k in keys])


@router.delete("/keys/{key_id}", response_model=KeyOut, tags=["keys"],
               summary="Revoke an API key: refused from the next request on",
               responses=_ADMIN)  # fmt: skip
def revoke_key(key_id: KeyIdPath, ctx: Ctx, _admin: Admin, audit: Audit) -> KeyOut:
    rt = ctx.runtime
    try:
        key = rt.tenants.revoke(key_id, rt.clock())
    except KeyNotFound as exc:
        raise not_found(str(exc)) from None
    audit.record(AuditAction.KEY_REVOKED, key.id)
    return key_out(ctx, key)


@router.post(
    "/keys/{key_id}/rotate", response_model=KeyWithSecret, tags=["keys"],
    summary="A new secret for the key (shown once); the old one is refused at once",
    responses=error_responses(401, 403, 404, 409, 422, 500, 503),
)  # fmt: skip
def rotate_key(key_id: KeyIdPath, ctx: Ctx, _admin: Admin, audit: Audit) -> KeyOut:
    rt = ctx.runtime
    try:
        key, secret = rt.tenants.rotate(key_id, rt.clock())
    except KeyNotFound as exc:
        raise not_found(str(exc)) from None
    except TenantError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    audit.record(AuditAction.KEY_ROTATED, key.id)
    return key_out(ctx, key, secret)
