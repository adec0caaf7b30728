"""Commands about payments: create, watch, status."""

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
from watcher.cli.params import PAYMENT_ID
from watcher.engine.list_health import HealthState
from watcher.engine.records import transition_out
from watcher.engine.watching import ForeignPayment, create_and_watch, watch_existing
from watcher.timing import iso_timestamp
from watcher.voltage.errors import VoltageError, VoltageNotFound
from watcher.voltage.purpose import Purpose


@click.command("create")
@click.option(
    "--amount-msats",
    type=click.IntRange(min=0),
    default=None,
    help="Amount in millisatoshis; omit for an any-amount invoice.",
)
@click.option("--description", default=None, help="Invoice description (memo).")
@click.option(
    "--expiration",
    type=click.IntRange(1, 86400),
    default=None,
    help="Seconds until the invoice expires (Voltage default 3600).",
)
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--client-id", default=None, help="Makes the create idempotent.")
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def create(
    amount_msats: int | None,
    description: str | None,
    expiration: int | None,
    metadata: tuple[str, ...],
    client_id: str | None,
    app_name: str | None,
    as_json: bool,
) -> None:
    """Create a receive on Voltage and watch it; prints the id and the BOLT11 invoice."""
    rt = runtime_or_exit(need_voltage=True)
    owner = owner_or_exit(rt, app_name)
    try:
        result = create_and_watch(
            rt,
            amount_msats=amount_msats,
            description=description,
            expiration=expiration,
            metadata=parse_pairs(metadata, "--metadata"),
            client_id=client_id,
            owner=owner,
        )
    except ForeignPayment:
        fail(f"client id {client_id!r} is taken by another app's payment; choose another")
    except (VoltageError, ValueError) as exc:
        fail(str(exc))
    if result.created:
        amount = "any amount" if amount_msats is None else f"{amount_msats} msats"
        record(rt, AuditAction.PAYMENT_CREATED, result.record.id, amount)
    if as_json:
        echo_json(result.record.to_public())
        return
    click.echo(f"id:      {result.record.id}")
    click.echo(f"status:  {result.record.status}")
    click.echo(f"invoice: {result.record.payment_request or '(not ready yet; being watched)'}")


@click.command("watch")
@click.argument("payment_id", type=PAYMENT_ID)
@app_option
def watch(payment_id: str, app_name: str | None) -> None:
    """Watch a payment created elsewhere (by its Voltage id)."""
    rt = runtime_or_exit(need_voltage=True)
    owner = owner_or_exit(rt, app_name)
    try:
        result = watch_existing(rt, payment_id, owner or None)
    except ForeignPayment:
        fail(f"payment {payment_id!r} is another app's (or being created by one)")
    except VoltageNotFound:
        fail(f"Voltage has no payment {payment_id!r} in this environment")
    except VoltageError as exc:
        fail(str(exc))
    if result.created:
        record(rt, AuditAction.PAYMENT_WATCHED, payment_id)
    state = "now watching" if result.created else "already watched"
    click.echo(f"{payment_id}: {state} (status {result.record.status})")


@click.command("status")
@click.argument("payment_id", required=False, type=PAYMENT_ID)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(payment_id: str | None, limit: int, as_json: bool) -> None:
    """Pending payments as a table, or one payment's record and transitions."""
    rt = runtime_or_exit()
    if payment_id:
        record = rt.payments.get(payment_id)
        if record is None:
            fail(f"not watching {payment_id!r}")
        transitions = [transition_out(t) for t in rt.payments.transitions(payment_id)]
        echo_json({**record.to_public(), "transitions": transitions})
        return
    rows = []
    for pid, next_at in rt.payments.pending_ids(limit):
        record = rt.payments.get(pid)
        if record is not None:
            rows.append({**record.to_public(), "next_poll_at": iso_timestamp(next_at)})
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{rt.payments.pending_count()} pending")
    echo_table(rows, ("id", "status", "amount_msats", "poll_count", "last_poll_at", "next_poll_at"))
    click.echo("")
    click.echo(detection_line(rt.list_health.state(), rt.clock()))
    echo_table(request_rows(rt.payments.counters()), ("purpose", "requests"))


def detection_line(state: HealthState, now: float) -> str:
    """How payments are being detected right now, in one line."""
    if state.fallback and state.failing_since is not None:
        since = round(now - state.failing_since)
        return f"detection: FALLBACK to per-payment polls (list calls failing for {since} s)"
    if state.fallback:
        return "detection: per-payment polls (WATCHER_SWEEP_INTERVAL=0 turns sweeps off)"
    if state.failing_since is not None:
        failing = round(now - state.failing_since)
        return f"detection: list sweeps, list calls failing for {failing} s"
    return "detection: list sweeps (reads by id only confirm)"


def request_rows(counters: dict[str, int]) -> list[dict[str, object]]:
    """Voltage requests sent so far, by why (every purpose, 0 included), and the total."""
    rows: list[dict[str, object]] = [
        {"purpose": p.value, "requests": counters.get(f"voltage_requests:{p.value}", 0)}
        for p in Purpose
    ]
    rows.append({"purpose": "total", "requests": sum(int(str(r["requests"])) for r in rows)})
    return rows


COMMANDS = [create, watch, status]
