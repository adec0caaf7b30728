"""Shared pieces of the `watcher` commands: settings, the runtime, failures, tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import click
import redis
from redis.exceptions import AuthenticationWrongNumberOfArgsError, NoPermissionError
from redis.sentinel import MasterNotFoundError

from watcher.access.tenants import AppNotFound
from watcher.logging import configure_logging, redact
from watcher.runtime import Runtime
from watcher.settings import ConfigError, Settings, get_settings, load_settings
from watcher.stack import STACK_FILE

# Exit status of every command that cannot use its Redis, like a bad setting: the fix is in
# the configuration or the environment, not in the command's arguments.
REDIS_EXIT = 2

# What a command can meet when its Redis is down, elsewhere, or refuses the credentials.
REDIS_FAILURES: tuple[type[Exception], ...] = (
    redis.ConnectionError,  # refused, unreachable, wrong password (AuthenticationError), ...
    redis.TimeoutError,
    NoPermissionError,
    AuthenticationWrongNumberOfArgsError,
)
MAX_DETAIL = 160  # redis-py's own text, cut: some of it (sentinel failures) runs to pages


def settings_or_exit(*, find_stack: bool = True) -> Settings:
    """Read settings once; a bad value stops the command here, naming the variable.

    With `find_stack`, a `watcher up` running on the same data directory fills in what the
    environment leaves unset (its embedded Redis, its simulator): see watcher/stack.py. The
    commands that start a stack or a service go without: they use only what they are told.
    """
    try:
        settings = get_settings() if find_stack else load_settings()
    except ConfigError as exc:
        click.echo(f"watcher: {exc}", err=True)
        sys.exit(2)
    _warn_unknown_variables_once()
    return settings


_warned: list[bool] = []


def _warn_unknown_variables_once() -> None:
    from watcher.unknown_settings import unreported_unknown_variables

    if not _warned:
        _warned.append(True)
        for unknown in unreported_unknown_variables():
            click.echo(f"watcher: warning: {unknown.message()}", err=True)


def runtime_or_exit(*, need_voltage: bool = False) -> Runtime:
    """Settings, logging and a Redis that answers, or one line saying which is wrong."""
    settings = settings_or_exit()
    configure_logging(settings)
    if "watcher_log_level" not in settings.model_fields_set:
        # A command prints its result; the engine's INFO lines ("watching new payment") are
        # the daemon's log, not the command's output. Warnings and errors still show.
        logging.getLogger().setLevel(logging.WARNING)
    if settings.watcher_redis_url is None:
        click.echo(f"watcher: {no_stack_message(settings)}", err=True)
        sys.exit(REDIS_EXIT)
    try:
        if need_voltage:
            settings.require_voltage()
        rt = Runtime.from_settings(settings)
    except ConfigError as exc:
        click.echo(f"watcher: {exc}", err=True)
        sys.exit(2)
    try:
        rt.ping()  # before any work, so nothing is half done when Redis is not there
    except REDIS_FAILURES as exc:
        redis_failure_exit(settings, exc)
    return rt


def no_stack_message(settings: Settings) -> str:
    data_dir = settings.watcher_data_dir.resolve()
    return (
        f"WATCHER_REDIS_URL is not set and no `watcher up` is running on {data_dir} (it would "
        f"have left {data_dir / STACK_FILE}): start `watcher up`, run this command from its "
        "directory or with its WATCHER_DATA_DIR, or set WATCHER_REDIS_URL"
    )


def redis_failure_message(settings: Settings, exc: Exception) -> str:
    """One line: which Redis (password masked), what went wrong, and what to check."""
    url = settings.redis_url_for_display() or "(WATCHER_REDIS_URL is not set)"
    detail = " ".join(redact(str(exc) or type(exc).__name__).split())
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    if isinstance(exc, MasterNotFoundError):
        master = settings.watcher_redis_sentinel_master
        return (
            f"cannot reach Redis: no sentinel at {url} answered for a master named {master!r}: "
            "check WATCHER_REDIS_URL, WATCHER_REDIS_SENTINEL_MASTER and that the sentinels and "
            "Redis are running"
        )
    if isinstance(exc, redis.AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return (
            f"Redis at {url} refused the credentials ({detail}): check the password "
            "(and user) in WATCHER_REDIS_URL"
        )
    if isinstance(exc, NoPermissionError):
        return (
            f"Redis at {url} refused a command ({detail}): the user in WATCHER_REDIS_URL "
            "needs access to every command and key of the watcher"
        )
    return (
        f"cannot reach Redis at {url} ({detail}): check WATCHER_REDIS_URL and that Redis is "
        "running and reachable from here"
    )


def redis_failure_exit(settings: Settings, exc: Exception) -> NoReturn:
    click.echo(f"watcher: {redis_failure_message(settings, exc)}", err=True)
    sys.exit(REDIS_EXIT)


app_option = click.option(
    "--app",
    "app_name",
    default=None,
    metavar="NAME",
    help="Make it this app's (as that app's key would); default: admin's.",
)


def owner_or_exit(rt: Runtime, app_name: str | None) -> str:
    """The app id that `--app NAME` names ("" without it: an admin's)."""
    if app_name is None:
        return ""
    try:
        return rt.tenants.app_named(app_name).id
    except AppNotFound as exc:
        fail(str(exc))


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
