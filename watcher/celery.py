"""The Celery app, discoverable as `celery -A watcher worker|beat|flower`.

Celery is the muscle, Redis schedules are the truth: no task waits with countdown/eta; beat
only sends short ticks, and every task is idempotent (acks late, re-run on worker loss).
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_init, setup_logging, task_postrun, task_prerun
from kombu import Exchange, Queue

from watcher.logging import bind, configure_logging, get_logger
from watcher.settings import ConfigError, Settings, get_settings

QUEUE_CONTROL = "watcher.control"
QUEUE_POLL = "watcher.poll"
QUEUE_DELIVER = "watcher.deliver"
QUEUE_RETRY = "watcher.retry"
ALL_QUEUES = (QUEUE_CONTROL, QUEUE_POLL, QUEUE_DELIVER, QUEUE_RETRY)

# The longest task (a poll chunk, a delivery) is far below this; a message a dead worker held
# is redelivered only after it, and by then the Redis lease has already re-queued its work.
VISIBILITY_TIMEOUT = 3600


def _transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if settings.watcher_redis_sentinel_master:
        # kombu's sentinel:// transport finds the master by this name.
        options["master_name"] = settings.watcher_redis_sentinel_master
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    # Unset, no broker at all (not a silent 127.0.0.1): the worker and beat refuse to start
    # (`_require_broker`); importing the app for its task names still works.
    broker = settings.watcher_redis_url or "memory://"
    flower = settings.watcher_flower_basic_auth is not None
    # Ticks and sweeps are not on this schedule: beat runs them on threads of its own
    # (watcher/control.py), so they never wait in a queue behind polls or deliveries.
    schedule: dict[str, Any] = {
        "forget-old": {
            "task": "watcher.forget_old",
            "schedule": 3600.0,
            "options": {"queue": QUEUE_CONTROL, "expires": 1800.0},
        }
    }
    return {
        "broker_url": broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": _transport_options(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Each queue on its own direct exchange of the same name: without one, kombu binds
        # every queue to the default queue's exchange, and the banner showed them all as
        # `exchange=watcher.poll`.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in ALL_QUEUES],
        "task_default_queue": QUEUE_POLL,
        "task_routes": {
            "watcher.dispatch_polls": {"queue": QUEUE_CONTROL},
            "watcher.forget_old": {"queue": QUEUE_CONTROL},
            "watcher.dispatch_deliveries": {"queue": QUEUE_CONTROL},
            "watcher.poll_payments": {"queue": QUEUE_POLL},
            "watcher.deliver": {"queue": QUEUE_DELIVER},
        },
        "task_soft_time_limit": 300,
        "task_time_limit": 360,
        # Task events feed Flower and nothing else; without it they cost the worker a
        # PUBLISH per task state (11-22% of a delivery's CPU, docs/performance.md). Flower
        # needs WATCHER_FLOWER_BASIC_AUTH, which every process of a deployment shares.
        "worker_send_task_events": flower,
        "task_send_sent_event": flower,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "beat_schedule": schedule,
        "beat_schedule_filename": str(settings.watcher_data_dir / "celerybeat-schedule"),
        "timezone": "UTC",
        "enable_utc": True,
    }


def _load_settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


log = get_logger(__name__)

app = Celery("watcher", include=["watcher.tasks"])
app.conf.update(celery_config(_load_settings()))


@setup_logging.connect
def _setup_logging(**_kwargs: Any) -> None:
    from watcher.unknown_settings import unreported_unknown_variables

    configure_logging(get_settings())
    for unknown in unreported_unknown_variables():
        log.warning(unknown.message(), variable=unknown.name, did_you_mean=unknown.suggestion)


@task_prerun.connect
def _bind_task(task_id: str | None = None, **_kwargs: Any) -> None:
    bind(task_id=task_id)


@task_postrun.connect
def _unbind_task(**_kwargs: Any) -> None:
    import structlog

    structlog.contextvars.clear_contextvars()


@celeryd_init.connect
def _require_broker(**_kwargs: Any) -> None:
    """A worker or beat without WATCHER_REDIS_URL says so and stops, in one line."""
    try:
        get_settings().broker_url()
    except ConfigError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@beat_init.connect
def _start_control_loop(**_kwargs: Any) -> None:
    """Beat is the clock: it runs the dispatcher tick and the sweeps itself."""
    from watcher.control import ControlLoop

    _require_broker()
    ControlLoop().start()
