"""Shared pieces of the `watcher` commands: settings, the runtime, failures, tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import click

from watcher.logging import configure_logging
from watcher.runtime import Runtime
from watcher.settings import ConfigError, Settings, get_settings


def settings_or_exit() -> Settings:
    """Read settings once; a bad value stops the command here, naming the variable."""
    try:
        return get_settings()
    except ConfigError as exc:
        click.echo(f"watcher: {exc}", err=True)
        sys.exit(2)


def runtime_or_exit(*, need_voltage: bool = False) -> Runtime:
    settings = settings_or_exit()
    configure_logging(settings)
    try:
        if need_voltage:
            settings.require_voltage()
        return Runtime.from_settings(settings)
    except ConfigError as exc:
        click.echo(f"watcher: {exc}", err=True)
        sys.exit(2)


def fail(message: str) -> NoReturn:
    click.echo(f"watcher: {message}", err=True)
    sys.exit(1)


def parse_pairs(pairs: Iterable[str], option: str) -> dict[str, str]:
    """KEY=VALUE options into a dict; a malformed one is a usage error naming the option."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        parsed[key] = value
    return parsed


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def echo_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A plain aligned table; empty cells show as '-'."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
