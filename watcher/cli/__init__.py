"""The `watcher` command line: one module per group of commands."""

from __future__ import annotations

import click

from watcher import __version__


@click.group()
@click.version_option(__version__, prog_name="watcher")
def cli() -> None:
    """voltage-watcher: watch Voltage payments, fire signed webhooks."""


def _register() -> None:
    from watcher.cli import deliveries, events, payments, service, subscriptions

    for module in (service, payments, subscriptions, deliveries, events):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli()
