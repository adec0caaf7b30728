"""The `watcher` command line."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from watcher import __version__
from watcher.engine.records import iso_timestamp
from watcher.engine.watching import create_and_watch, watch_existing
from watcher.logging import configure_logging
from watcher.runtime import Runtime
from watcher.settings import ConfigError, Settings, get_settings
from watcher.voltage.errors import VoltageError, VoltageNotFound


def _settings_or_exit() -> Settings:
    """Read settings once; a bad value stops the command here, naming the variable."""
    try:
        return get_settings()
    except ConfigError as exc:
        click.echo(f"watcher: {exc}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="watcher")
def cli() -> None:
    """voltage-watcher: watch Voltage payments, fire signed webhooks."""


@cli.command("config")
def show_config() -> None:
    """Print the effective settings as JSON (secrets masked) and exit non-zero if invalid."""
    settings = _settings_or_exit()
    shown: dict[str, Any] = json.loads(settings.model_dump_json())
    click.echo(json.dumps(shown, indent=2, sort_keys=True))


@cli.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    default=None,
    help="Key the simulator accepts (default: VOLTAGE_API_KEY, else 'sim-key').",
)
@click.option("--organization-id", default=None, help="Accept only this organization id.")
@click.option("--environment-id", default=None, help="Accept only this environment id.")
@click.option(
    "--not-found-window",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 60),
    help="Seconds a fresh payment answers 404, like Voltage's eventual consistency.",
)
@click.option(
    "--generating-delay",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 60),
    help="Seconds a new receive stays 'generating' before its invoice appears.",
)
def simulator(
    host: str,
    port: int,
    api_key: str | None,
    organization_id: str | None,
    environment_id: str | None,
    not_found_window: float,
    generating_delay: float,
) -> None:
    """Run the Voltage API simulator; base URL http://HOST:PORT/v1."""
    from watcher.simulator import SimulatorConfig
    from watcher.simulator.server import serve

    settings = _settings_or_exit()
    configure_logging(settings)
    if api_key is None:
        configured = settings.voltage_api_key
        api_key = configured.get_secret_value() if configured else "sim-key"
    config = SimulatorConfig(
        api_keys={api_key: frozenset({"read", "receive", "write"})},
        organization_id=organization_id,
        environment_id=environment_id,
        not_found_window=not_found_window,
        generating_delay=generating_delay,
    )
    click.echo(f"Voltage simulator on http://{host}:{port}/v1 (control: /_sim)", err=True)
    serve(host, port, config)


def _runtime_or_exit() -> Runtime:
    settings = _settings_or_exit()
    configure_logging(settings)
    try:
        settings.require_voltage()
        return Runtime.from_settings(settings)
    except ConfigError as exc:
        click.echo(f"watcher: {exc}", err=True)
        sys.exit(2)


def _fail(message: str) -> NoReturn:
    click.echo(f"watcher: {message}", err=True)
    sys.exit(1)


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        metadata[key] = value
    return metadata


@cli.command("create")
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
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def create(
    amount_msats: int | None,
    description: str | None,
    expiration: int | None,
    metadata: tuple[str, ...],
    client_id: str | None,
    as_json: bool,
) -> None:
    """Create a receive on Voltage and watch it; prints the id and the BOLT11 invoice."""
    rt = _runtime_or_exit()
    try:
        result = create_and_watch(
            rt,
            amount_msats=amount_msats,
            description=description,
            expiration=expiration,
            metadata=_metadata(metadata),
            client_id=client_id,
        )
    except (VoltageError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(result.record.to_public(), indent=2))
        return
    click.echo(f"id:      {result.record.id}")
    click.echo(f"status:  {result.record.status}")
    click.echo(f"invoice: {result.record.payment_request or '(not ready yet; being watched)'}")


@cli.command("watch")
@click.argument("payment_id")
def watch(payment_id: str) -> None:
    """Watch a payment created elsewhere (by its Voltage id)."""
    rt = _runtime_or_exit()
    try:
        result = watch_existing(rt, payment_id)
    except VoltageNotFound:
        _fail(f"Voltage has no payment {payment_id!r} in this environment")
    except VoltageError as exc:
        _fail(str(exc))
    state = "now watching" if result.created else "already watched"
    click.echo(f"{payment_id}: {state} (status {result.record.status})")


@cli.command("status")
@click.argument("payment_id", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(payment_id: str | None, limit: int, as_json: bool) -> None:
    """Pending payments as a table, or one payment's record and transitions."""
    settings = _settings_or_exit()
    configure_logging(settings)
    try:
        rt = Runtime.from_settings(settings)
    except ConfigError as exc:
        _fail(str(exc))
    if payment_id:
        record = rt.store.get(payment_id)
        if record is None:
            _fail(f"not watching {payment_id!r}")
        shown = {**record.to_public(), "transitions": rt.store.transitions(payment_id)}
        click.echo(json.dumps(shown, indent=2))
        return
    rows = []
    for pid, next_at in rt.store.pending_ids(limit):
        record = rt.store.get(pid)
        if record is not None:
            rows.append({**record.to_public(), "next_poll_at": iso_timestamp(next_at)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{rt.store.pending_count()} pending")
    columns = ("id", "status", "amount_msats", "poll_count", "last_poll_at", "next_poll_at")
    click.echo("  ".join(f"{c:<{_WIDTHS[c]}}" for c in columns))
    for row in rows:
        click.echo("  ".join(f"{row[c] or '-'!s:<{_WIDTHS[c]}}" for c in columns))


_WIDTHS = {
    "id": 36,
    "status": 10,
    "amount_msats": 12,
    "poll_count": 10,
    "last_poll_at": 24,
    "next_poll_at": 24,
}


def main() -> None:
    cli()
