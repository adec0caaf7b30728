"""`watcher deliveries ...`: the delivery log, attempt by attempt, and manual re-sends."""

from __future__ import annotations

import time
from typing import Any

import click

from watcher.access.audit import AuditAction
from watcher.cli.audit import record
from watcher.cli.common import echo_json, echo_table, fail, runtime_or_exit
from watcher.cli.params import DELIVERY_ID, SUBSCRIPTION_ID
from watcher.delivery.store import DEAD, FAILED, PENDING, SUCCEEDED

COLUMNS = (
    "id",
    "event_type",
    "subscription_id",
    "status",
    "attempts",
    "last_status_code",
    "updated_at",
)


@click.group("deliveries")
def deliveries() -> None:
    """The delivery log: list, show (with every attempt), redeliver."""


@deliveries.command("list")
@click.option("--subscription", "subscription_id", type=SUBSCRIPTION_ID, default=None)
@click.option("--status", type=click.Choice([PENDING, FAILED, SUCCEEDED, DEAD]), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_deliveries(
    subscription_id: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """Newest first."""
    rt = runtime_or_exit()
    rows: list[dict[str, Any]] = []
    offset = 0
    while len(rows) < limit:
        ids = rt.deliveries.list_ids(subscription_id=subscription_id, offset=offset, limit=200)
        if not ids:
            break
        offset += len(ids)
        for delivery_id in ids:
            delivery = rt.deliveries.get(delivery_id)
            if delivery is not None and (status is None or delivery.status == status):
                rows.append(delivery.to_public())
    rows = rows[:limit]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, COLUMNS)


@deliveries.command("show")
@click.argument("delivery_id", type=DELIVERY_ID)
def show(delivery_id: str) -> None:
    """One delivery with every attempt: time, status code, latency, response excerpt, error."""
    rt = runtime_or_exit()
    delivery = rt.deliveries.get(delivery_id, with_attempts=True)
    if delivery is None:
        fail(f"no delivery {delivery_id!r}")
    echo_json(delivery.to_public())


@deliveries.command("redeliver")
@click.argument("delivery_id", type=DELIVERY_ID)
def redeliver(delivery_id: str) -> None:
    """Send it again now (same event, same webhook-id)."""
    from watcher.tasks import dispatch_due_deliveries_now

    rt = runtime_or_exit()
    delivery = rt.deliveries.redeliver(delivery_id, time.time())
    if delivery is None:
        fail(f"no delivery {delivery_id!r}")
    record(rt, AuditAction.REDELIVERED, delivery_id, delivery.subscription_id)
    dispatch_due_deliveries_now(rt)
    click.echo(f"{delivery_id}: queued for re-sending")


COMMANDS = [deliveries]
