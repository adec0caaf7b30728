"""`watcher apps ...` and `watcher keys ...`: tenants and their API keys."""

from __future__ import annotations

import time

import click

from watcher.access.audit import AuditAction
from watcher.access.principal import Scope
from watcher.access.tenants import ApiKey, TenantError, new_key, retire_app
from watcher.cli.audit import record
from watcher.cli.common import echo_json, echo_table, fail, runtime_or_exit
from watcher.runtime import Runtime

KEY_COLUMNS = ("id", "app", "admin", "scope", "created_at", "rotated_at", "revoked_at")


def _key_row(rt: Runtime, key: ApiKey, names: dict[str, str] | None = None) -> dict[str, object]:
    names = rt.tenants.app_names() if names is None else names
    return key.to_public(names.get(key.app_id))


def _print_key(rt: Runtime, key: ApiKey, secret: str, as_json: bool) -> None:
    if as_json:
        echo_json({**_key_row(rt, key), "key": secret})
        return
    click.echo(secret)
    click.echo(
        f"# id {key.id}; shown only now: store it (`watcher keys list` shows the id)", err=True
    )


@click.group("apps")
def apps() -> None:
    """Apps (tenants): each sees only its own payments, subscriptions and deliveries."""


@apps.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def create_app(name: str, as_json: bool) -> None:
    """Make an app; then `watcher keys create --app NAME` gives it a key."""
    rt = runtime_or_exit()
    try:
        app = rt.tenants.create_app(name, time.time())
    except TenantError as exc:
        fail(str(exc))
    record(rt, AuditAction.APP_CREATED, app.id, app.name)
    if as_json:
        echo_json(app.to_public())
    else:
        click.echo(f"app {app.name} ({app.id})")


@apps.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_apps(as_json: bool) -> None:
    rows = [a.to_public() for a in runtime_or_exit().tenants.apps()]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("name", "id", "created_at"))


@apps.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show_app(name: str, as_json: bool) -> None:
    """An app and its keys."""
    rt = runtime_or_exit()
    try:
        app = rt.tenants.app_named(name)
    except TenantError as exc:
        fail(str(exc))
    names = {app.id: app.name}
    keys = [_key_row(rt, k, names) for k in rt.tenants.keys_of(app.id)]
    if as_json:
        echo_json({**app.to_public(), "keys": keys})
        return
    click.echo(f"app {app.name} ({app.id}), made {app.to_public()['created_at']}")
    echo_table(keys, KEY_COLUMNS)


@apps.command("delete")
@click.argument("name")
def delete_app(name: str) -> None:
    """Delete an app: its keys are revoked and its subscriptions disabled; what it watched and
    delivered stays readable to admins."""
    rt = runtime_or_exit()
    try:
        app, revoked, disabled = retire_app(rt.tenants, rt.subscriptions, name, time.time())
    except TenantError as exc:
        fail(str(exc))
    record(rt, AuditAction.APP_DELETED, app.id, f"{app.name}: {len(revoked)} keys revoked")
    click.echo(
        f"deleted app {app.name} (keys revoked: {len(revoked)}, "
        f"subscriptions disabled: {len(disabled)})"
    )


@click.group("keys")
def api_keys() -> None:
    """API keys: an app's (read or write), or an admin's. Kept hashed; shown once."""


@api_keys.command("create")
@click.option("--app", "app_name", default=None, help="The app the key acts for.")
@click.option("--admin", is_flag=True, help="An admin key instead: everything, every app.")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default="write",
              show_default=True, help="read: cannot change anything.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="An object with `key` and `id`.")
def create_key(app_name: str | None, admin: bool, scope: str, as_json: bool) -> None:
    """Make a key and print it, once."""
    if (app_name is None) == (not admin):
        fail("give --app NAME, or --admin (not both)")
    rt = runtime_or_exit()
    try:
        key, secret = new_key(rt.tenants, app_name, Scope(scope), time.time())
    except TenantError as exc:
        fail(str(exc))
    record(rt, AuditAction.KEY_CREATED, key.id, f"{app_name or 'admin'}, {scope}")
    _print_key(rt, key, secret, as_json)


@api_keys.command("list")
@click.option("--app", "app_name", default=None, help="Only this app's.")
@click.option("--json", "as_json", is_flag=True)
def list_keys(app_name: str | None, as_json: bool) -> None:
    """Keys by id, never the keys themselves."""
    rt = runtime_or_exit()
    tenants = rt.tenants
    try:
        found = tenants.keys_of(tenants.app_named(app_name).id) if app_name else tenants.all_keys()
    except TenantError as exc:
        fail(str(exc))
    names = tenants.app_names()
    rows = [_key_row(rt, k, names) for k in found]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, KEY_COLUMNS)


@api_keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Refuse the key from its next request on, on every API process."""
    rt = runtime_or_exit()
    try:
        key = rt.tenants.revoke(key_id, time.time())
    except TenantError as exc:
        fail(str(exc))
    record(rt, AuditAction.KEY_REVOKED, key.id)
    click.echo(f"revoked {key.id}")


@api_keys.command("rotate")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
def rotate_key(key_id: str, as_json: bool) -> None:
    """A new secret for the key, printed once; the old one is refused at once."""
    rt = runtime_or_exit()
    try:
        key, secret = rt.tenants.rotate(key_id, time.time())
    except TenantError as exc:
        fail(str(exc))
    record(rt, AuditAction.KEY_ROTATED, key.id)
    _print_key(rt, key, secret, as_json)


COMMANDS = [apps, api_keys]
