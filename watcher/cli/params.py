"""Click parameter types for ids, so a malformed one is a usage error naming the argument
before anything reaches Redis (a suffixed id names another key of another type)."""

from __future__ import annotations

import click

from watcher import ids


class IdParam(click.ParamType[str]):
    def __init__(self, kind: ids.IdKind) -> None:
        self.kind = kind
        self.name = kind.name.split(" (", maxsplit=1)[0]

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            return self.kind.check(str(value))
        except ids.InvalidId as exc:
            self.fail(f"{value!r} is {exc}", param, ctx)


PAYMENT_ID = IdParam(ids.PAYMENT)
SUBSCRIPTION_ID = IdParam(ids.SUBSCRIPTION)
DELIVERY_ID = IdParam(ids.DELIVERY)
