"""Commands that run or inspect a process: config, simulator."""

from __future__ import annotations

import json
from typing import Any

import click

from watcher.cli.common import echo_json, settings_or_exit
from watcher.logging import configure_logging


@click.command("config")
def show_config() -> None:
    """Print the effective settings as JSON (secrets masked) and exit non-zero if invalid."""
    settings = settings_or_exit()
    shown: dict[str, Any] = json.loads(settings.model_dump_json())
    echo_json(dict(sorted(shown.items())))


@click.command("simulator")
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

    settings = settings_or_exit()
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


COMMANDS = [show_config, simulator]
