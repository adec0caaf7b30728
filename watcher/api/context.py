"""What every route needs, built once per app: the runtime, the tokens, the knobs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from watcher.api.failure_log import log_failure
from watcher.logging import get_logger
from watcher.runtime import Runtime
from watcher.settings import Settings

log = get_logger(__name__)

Kick = Callable[[Runtime], None]


@dataclass
class ApiContext:
    runtime: Runtime
    invoice_wait: float
    webhook_tolerance: int
    kick: Kick
    token_bytes: list[bytes] = field(repr=False)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def kick_quietly(self) -> None:
        """Hand due deliveries to the workers now; beat's next tick does it otherwise."""
        try:
            self.kick(self.runtime)
        except Exception as exc:
            log_failure(log, "could not hand deliveries to the workers; beat's next tick will", exc)


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


class CeleryKick:
    """Run a delivery dispatcher tick now instead of at beat's next one.

    Sends `watcher.dispatch_deliveries` (the task beat sends every tick: fan out new outbox
    events, repair interrupted fan-outs, send due deliveries in chunks) through a Celery app
    bound to *this* runtime's broker. A worker runs it, so the API shares the workers' exact
    dispatch logic instead of copying it, and the process-wide Celery app (configured once
    from the environment) is never touched.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: Any = None
        self._lock = threading.Lock()

    def _celery(self) -> Any:
        with self._lock:
            if self._app is None:
                from celery import Celery

                from watcher.celery import celery_config

                app = Celery("watcher-api", set_as_current=False)
                app.conf.update(celery_config(self._settings))
                self._app = app
            return self._app

    def __call__(self, rt: Runtime) -> None:
        from watcher.celery import QUEUE_CONTROL
        from watcher.tasks import dispatch_deliveries

        expires = max(5.0, rt.settings.watcher_dispatch_interval * 5)
        self._celery().send_task(dispatch_deliveries.name, queue=QUEUE_CONTROL, expires=expires)

    def close(self) -> None:
        with self._lock:
            app, self._app = self._app, None
        if app is not None:
            app.pool.force_close_all()
            app.close()
