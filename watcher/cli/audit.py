"""`watcher audit`: who changed what through the API or the CLI, and when; and the CLI's own
entries in it."""

from __future__ import annotations

import time

import click

from watcher.access.audit import AuditAction, cli_actor
from watcher.cli.common import echo_json, echo_table, fail, runtime_or_exit
from watcher.paging import CursorError
from watcher.runtime import Runtime

COLUMNS = ("at", "actor", "action", "target", "detail")


def record(rt: Runtime, action: AuditAction, target: str, detail: str = "") -> None:
    """A change this CLI made, by the operating-system user that ran it."""
    rt.audit.record(cli_actor(), action, target, time.time(), detail)


@click.command("audit")
@click.option("--actor", default=None, help="Only this actor (tok_... or cli:USER).")
@click.option(
    "--action", type=click.Choice([a.value for a in AuditAction]), default=None, help="Only this."
)
@click.option("--target", default=None, help="Only changes of this payment, subscription...")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--before", default=None, help="An entry id: only older entries.")
@click.option("--json", "as_json", is_flag=True)
def audit(
    actor: str | None,
    action: str | None,
    target: str | None,
    limit: int,
    before: str | None,
    as_json: bool,
) -> None:
    """Who changed what, and when, newest first (API tokens appear by id, never in full)."""
    rt = runtime_or_exit()
    try:
        entries, _ = rt.audit.page(
            cursor=before, limit=limit, actor=actor, action=action, target=target
        )
    except CursorError as exc:
        fail(f"--before: {exc}")
    rows = [e.to_public() for e in entries]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ("id", *COLUMNS))


COMMANDS = [audit]
