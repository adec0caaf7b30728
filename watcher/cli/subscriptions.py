"""`watcher subscriptions ...`: manage webhook subscribers from the command line."""

from __future__ import annotations

import click

from watcher.access.audit import AuditAction
from watcher.cli.audit import record
from watcher.cli.common import (
    app_option,
    echo_json,
    echo_table,
    fail,
    owner_or_exit,
    parse_pairs,
    runtime_or_exit,
)
from watcher.cli.params import SUBSCRIPTION_ID
from watcher.delivery.subscription_checks import SUBSCRIBABLE, InvalidSubscription
from watcher.delivery.subscriptions import Subscription, SubscriptionNotFound
from watcher.runtime import Runtime

COLUMNS = ("id", "url", "event_types", "enabled", "disabled_reason", "created_at")


@click.group("subscriptions")
def subscriptions() -> None:
    """Webhook subscribers: add, list, show, rotate, enable, disable, test, delete."""


def _get(rt: Runtime, subscription_id: str) -> Subscription:
    try:
        return rt.subscriptions.get(subscription_id)
    except SubscriptionNotFound:
        fail(f"no subscription {subscription_id!r}")


@subscriptions.command("add")
@click.argument("url")
@click.option(
    "--event-type",
    "event_types",
    multiple=True,
    type=click.Choice(SUBSCRIBABLE),
    help="Repeatable; default: every payment event.",
)
@click.option("--wallet-id", default=None, help="Only payments of this wallet.")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Only payments with it.")
@click.option("--description", default=None)
@app_option
@click.option("--json", "as_json", is_flag=True)
def add(
    url: str,
    event_types: tuple[str, ...],
    wallet_id: str | None,
    metadata: tuple[str, ...],
    description: str | None,
    app_name: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL; prints the signing secret, which is shown only this once. With --app,
    it takes only that app's events."""
    rt = runtime_or_exit()
    owner = owner_or_exit(rt, app_name)
    try:
        sub, secret = rt.subscriptions.create(
            url=url,
            event_types=event_types or None,
            wallet_id=wallet_id,
            metadata_filter=parse_pairs(metadata, "--metadata"),
            description=description,
            owner=owner,
        )
    except InvalidSubscription as exc:
        fail(str(exc))
    record(rt, AuditAction.SUBSCRIPTION_CREATED, sub.id, ", ".join(sub.event_types))
    if as_json:
        echo_json({**sub.to_public(), "secret": secret})
        return
    click.echo(f"id:     {sub.id}")
    click.echo(f"secret: {secret}   (shown once: store it with the receiver)")


@subscriptions.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_subscriptions(limit: int, as_json: bool) -> None:
    """Every subscription (secrets are never shown here)."""
    rt = runtime_or_exit()
    rows = [sub.to_public() for sub in rt.subscriptions.page(limit=limit)]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, COLUMNS)


@subscriptions.command("show")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def show(subscription_id: str) -> None:
    rt = runtime_or_exit()
    echo_json(_get(rt, subscription_id).to_public())


@subscriptions.command("rotate")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def rotate(subscription_id: str) -> None:
    """New signing secret; the old one keeps signing for WATCHER_WEBHOOK_SECRET_OVERLAP."""
    rt = runtime_or_exit()
    _get(rt, subscription_id)
    overlap = rt.settings.watcher_webhook_secret_overlap
    _, secret = rt.subscriptions.rotate_secret(subscription_id, overlap=overlap)
    record(rt, AuditAction.ROTATED, subscription_id, f"overlap {overlap:g} s")
    click.echo(f"secret: {secret}   (shown once; the old secret also signs for {overlap:g} s)")


@subscriptions.command("disable")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
@click.option("--reason", default="disabled by an operator", show_default=True)
def disable(subscription_id: str, reason: str) -> None:
    rt = runtime_or_exit()
    _get(rt, subscription_id)
    rt.subscriptions.disable(subscription_id, reason)
    record(rt, AuditAction.SUBSCRIPTION_CHANGED, subscription_id, "enabled (false)")
    click.echo(f"{subscription_id}: disabled ({reason})")


@subscriptions.command("enable")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def enable(subscription_id: str) -> None:
    rt = runtime_or_exit()
    _get(rt, subscription_id)
    rt.subscriptions.update(subscription_id, enabled=True)
    record(rt, AuditAction.SUBSCRIPTION_CHANGED, subscription_id, "enabled (true)")
    click.echo(f"{subscription_id}: enabled")


@subscriptions.command("test")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def send_test(subscription_id: str) -> None:
    """Send a `webhook.test` event to this subscription."""
    from watcher.tasks import fan_out_and_dispatch

    rt = runtime_or_exit()
    sub = _get(rt, subscription_id)
    event = rt.deliveries.add_test_event(subscription_id, owner=sub.app)
    record(rt, AuditAction.TEST_SENT, subscription_id, event.event_id)
    fan_out_and_dispatch(rt)
    click.echo(f"test event {event.event_id} queued; see `watcher deliveries list`")


@subscriptions.command("delete")
@click.argument("subscription_id", type=SUBSCRIPTION_ID)
def delete(subscription_id: str) -> None:
    rt = runtime_or_exit()
    _get(rt, subscription_id)
    rt.subscriptions.delete(subscription_id)
    record(rt, AuditAction.SUBSCRIPTION_DELETED, subscription_id)
    click.echo(f"{subscription_id}: deleted")


COMMANDS = [subscriptions]
