"""structlog, configured once: JSON lines in production, readable columns on a terminal.

Every secret the settings know is scrubbed from every rendered line, whatever the code that
logged it did, because an API key in a log aggregator is a leaked API key.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
import structlog.tracebacks

from watcher.settings import LogFormat, Settings

REDACTED = "[redacted]"
PER_TASK_LOGGERS = (
    "celery.worker.strategy",
    "celery.app.trace",
    "celery.beat",
    # Start-up chatter with nothing to act on: "mingle: all alone", "Waiting for application
    # startup." (the watcher logs "api started" and "watcher is up" itself).
    "celery.worker.consumer.mingle",
    "uvicorn.error",
)

_secrets: list[str] = []


def register_secrets(values: Iterable[str]) -> None:
    """Add values the redactor must never let through (tokens, keys, webhook secrets)."""
    for value in values:
        if value and value not in _secrets:
            _secrets.append(value)
    _secrets.sort(key=len, reverse=True)


# Passwords by their shape, for URLs built at run time that no setting held (an embedded
# Redis, a subscriber URL with userinfo): `scheme://user:password@` and `password=` in a query.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:'\"]*:)([^\s@'\"]+)(@)")
_QUERY_PASSWORD = re.compile(r"(?i)((?<![a-z0-9])[a-z0-9_.-]*password=)([^\s&#;'\",]+)")


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<3>", text)
    if "assword=" in text or "ASSWORD=" in text:
        text = _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _redact_event(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


class _RedactingStream:
    """Last line of defence: scrubs the rendered text too (tracebacks, foreign loggers)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def flush(self) -> None:
        self._stream.flush()


def _use_console(fmt: LogFormat, stream: TextIO) -> bool:
    if fmt is LogFormat.AUTO:
        return bool(getattr(stream, "isatty", lambda: False)())
    return fmt is LogFormat.CONSOLE


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library (Celery, uvicorn) through one renderer."""
    stream = stream or sys.stderr
    register_secrets(settings.secret_values())
    console = _use_console(settings.watcher_log_format, stream)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        final: list[Any] = [_redact_event, renderer]
    else:
        final = [
            # No local variables in tracebacks: a local may hold a secret.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            _redact_event,
            structlog.processors.JSONRenderer(),
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(_RedactingStream(stream))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.watcher_log_level.upper())
    for noisy in ("urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Celery's line per task received, succeeded and sent by beat: several a second when busy,
    # a few a minute when idle, and none of them news. DEBUG shows them; failures still show.
    per_task = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for chatty in PER_TASK_LOGGERS:
        logging.getLogger(chatty).setLevel(per_task)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)


def bind(**context: Any) -> None:
    """Bind ids (payment_id, subscription_id, delivery_id, task_id) for the current context."""
    structlog.contextvars.bind_contextvars(**context)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
