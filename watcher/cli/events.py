"""`watcher events`: the event history, as a receiver catching up would read it."""

from __future__ import annotations

import click

from watcher.cli.common import echo_json, echo_table, runtime_or_exit
from watcher.cli.params import PAYMENT_ID
from watcher.delivery.subscription_checks import PAYMENT_EVENT_TYPES, TEST_EVENT_TYPE


@click.command("events")
@click.option("--type", "event_type", type=click.Choice([*PAYMENT_EVENT_TYPES, TEST_EVENT_TYPE]))
@click.option(
    "--payment", "payment_id", type=PAYMENT_ID, default=None, help="Only events of this payment."
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Full events (with bodies) as JSON.")
def events(event_type: str | None, payment_id: str | None, limit: int, as_json: bool) -> None:
    """The newest events first."""
    rt = runtime_or_exit()
    rows, _ = rt.deliveries.history.event_page(
        cursor=None, limit=limit, newest_first=True, event_type=event_type, payment_id=payment_id
    )
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("id", "type", "payment_id", "created_at"))


COMMANDS = [events]
