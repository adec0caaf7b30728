"""The `watcher` command line: one module per group of commands."""

from __future__ import annotations

from typing import Any

import click

from watcher import __version__


class WatcherGroup(click.Group):
    """Turns a Redis that goes away or refuses mid-command into one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from watcher.cli.common import REDIS_FAILURES, redis_failure_exit, settings_or_exit

        try:
            return super().invoke(ctx)
        except REDIS_FAILURES as exc:
            redis_failure_exit(settings_or_exit(), exc)


@click.group(cls=WatcherGroup)
@click.version_option(__version__, prog_name="watcher")
def cli() -> None:
    """voltage-watcher: watch Voltage payments, fire signed webhooks."""


def _register() -> None:
    from watcher.cli import audit, deliveries, events, payments, service, subscriptions, tenants

    for module in (service, payments, subscriptions, deliveries, events, audit, tenants):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli()
