"""Commands that run or inspect a process: config, simulator."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from watcher.cli.common import echo_json, fail, settings_or_exit
from watcher.logging import configure_logging
from watcher.settings import ConfigError


@click.command("config")
def show_config() -> None:
    """Print the effective settings as JSON (secrets masked) and exit non-zero if invalid."""
    from watcher.stack import read_stack, stack_path

    settings = settings_or_exit()
    if read_stack(settings.watcher_data_dir) is not None:
        click.echo(
            "watcher: what this shell's commands use: these settings, with what the running "
            f"`watcher up` records in {stack_path(settings.watcher_data_dir)} filled in",
            err=True,
        )
    shown: dict[str, Any] = json.loads(settings.model_dump_json())
    shown["watcher_redis_url"] = settings.redis_url_for_display()
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
@click.option(
    "--state-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the payments in this file across restarts (default: in memory only).",
)
def simulator(
    host: str,
    port: int,
    api_key: str | None,
    organization_id: str | None,
    environment_id: str | None,
    not_found_window: float,
    generating_delay: float,
    state_file: Path | None,
) -> None:
    """Run the Voltage API simulator; base URL http://HOST:PORT/v1."""
    from watcher.simulator import SimulatorConfig
    from watcher.simulator.server import serve

    settings = settings_or_exit(find_stack=False)
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
        state_file=state_file,
    )
    kept = f", payments kept in {state_file}" if state_file else ", payments in memory only"
    click.echo(f"Voltage simulator on http://{host}:{port}/v1 (control: /_sim{kept})", err=True)
    serve(host, port, config)


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def api(host: str, port: int) -> None:
    """Run the HTTP API for subscribers and operators (its OpenAPI document at /openapi.json)."""
    from watcher.api.server import serve

    settings = settings_or_exit(find_stack=False)
    configure_logging(settings)
    try:
        serve(settings, host, port)
    except ConfigError as exc:
        fail(str(exc))


@click.command("flower")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True, type=click.IntRange(1, 65535))
def flower(address: str, port: int) -> None:
    """Run Flower on the pool, every page (/metrics, /healthcheck too) behind basic auth from
    WATCHER_FLOWER_BASIC_AUTH."""
    settings = settings_or_exit()
    if settings.watcher_flower_basic_auth is None:
        fail("WATCHER_FLOWER_BASIC_AUTH is not set (user:password); Flower needs it")
    try:
        settings.broker_url()
    except ConfigError as exc:
        fail(str(exc))
    env = {
        **os.environ,
        # Through the environment, not argv, so the password is not in `ps` output.
        "FLOWER_BASIC_AUTH": settings.watcher_flower_basic_auth.get_secret_value(),
        "FLOWER_UNAUTHENTICATED_API": "false",
    }
    # `celery -A watcher flower`, with /metrics and /healthcheck behind the same basic auth.
    argv = [
        sys.executable,
        "-m",
        "watcher.cli.flower_app",
        f"--address={address}",
        f"--port={port}",
    ]
    os.execve(sys.executable, argv, env)  # noqa: S606 - become Flower, keep the pid


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True, help="API address.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--simulate", is_flag=True, help="Also run the Voltage simulator and use it.")
@click.option("--simulator-port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--flower-port",
    default=5555,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 turns Flower off.",
)
def up(host: str, port: int, simulate: bool, simulator_port: int, flower_port: int) -> None:
    """API, worker, beat and Flower (and Redis, when WATCHER_REDIS_URL is unset) until Ctrl-C."""
    from watcher.supervisor import Supervisor, UpOptions

    settings = settings_or_exit(find_stack=False)
    configure_logging(settings)
    if not simulate:
        try:
            settings.require_voltage()
        except ConfigError as exc:
            fail(f"{exc}\n  (or run `watcher up --simulate` to try it against the simulator)")
    if flower_port and settings.watcher_flower_basic_auth is None:
        click.echo("watcher: Flower skipped: set WATCHER_FLOWER_BASIC_AUTH to run it", err=True)
        flower_port = 0
    supervisor = Supervisor(
        settings,
        UpOptions(
            api_host=host,
            api_port=port,
            simulate=simulate,
            simulator_port=simulator_port,
            flower_port=flower_port or None,
        ),
    )
    try:
        supervisor.start()
    except KeyboardInterrupt:
        supervisor.stop()
        sys.exit(130)
    except Exception as exc:
        supervisor.stop()
        fail(str(exc))
    sys.exit(supervisor.run())


@click.command("demo")
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the temporary data dir (Redis data, process logs) and print its path.",
)
@click.option(
    "--timeout",
    default=45.0,
    show_default=True,
    type=click.FloatRange(min=1, max=3600),
    help="Seconds the whole demo may take, start-up included, before it gives up.",
)
def demo(keep: bool, timeout: float) -> None:
    """Everything on temporary ports against the SIMULATED Voltage API: pay, expire, fail."""
    from watcher.demo import run_demo

    sys.exit(run_demo(timeout=timeout, keep=keep))


COMMANDS = [show_config, simulator, api, flower, up, demo]
