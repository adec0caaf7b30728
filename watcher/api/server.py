"""Serving the API: in the foreground (`watcher api`) or in a thread on a free port (tests).

The background server binds its socket itself, so `port=0` gets a free port that is known as
soon as `start()` returns.
"""

from __future__ import annotations

import uvicorn

from watcher.api.app import create_app
from watcher.logging import configure_logging
from watcher.settings import Settings
from watcher.threaded_server import ThreadedServer

# Voltage wants its webhooks answered within 10 s; keep-alive and shutdown stay short.
_GRACEFUL_SHUTDOWN = 5


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API in the foreground until Ctrl-C (the `watcher api` command).

    Raises ConfigError (naming the variable) when the settings cannot make a runtime.
    """
    configure_logging(settings)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # our logging setup (JSON or console, secrets scrubbed) stays
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
    )


class ApiServer(ThreadedServer):
    """The API on a real loopback port, served by uvicorn in a daemon thread (tests, demo)."""

    name = "watcher-api"

    @property
    def base_url(self) -> str:
        return self.root_url
