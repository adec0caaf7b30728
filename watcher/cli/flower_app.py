"""Flower as `watcher flower` runs it: Flower itself, with the two pages it leaves open even
under basic auth (`/metrics`, `/healthcheck`) behind that same basic auth.

Flower 2 has no option for this. /metrics names every task and worker and counts their
traffic, which is more than an anonymous caller should learn; probes and Prometheus can send
the credentials (deploy/ shows how).
"""

from __future__ import annotations

import sys
from typing import Any


def protect_open_pages() -> None:
    """Wrap the two handlers' GET in the check Flower's other pages use (a 401 for anyone
    without the password); safe to call twice."""
    from flower.views import monitor  # type: ignore[import-untyped]
    from tornado import web

    for handler in (monitor.Metrics, monitor.Healthcheck):
        get: Any = handler.get
        if not getattr(get, "watcher_protected", False):
            protected: Any = web.authenticated(get)
            protected.watcher_protected = True
            handler.get = protected


def main(argv: list[str] | None = None) -> None:
    """`celery -A watcher flower ARGV...`, in this process, after the pages are protected."""
    protect_open_pages()
    from celery.__main__ import main as celery_main

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["celery", "-A", "watcher", "flower", *args]
    celery_main()


if __name__ == "__main__":
    main()
