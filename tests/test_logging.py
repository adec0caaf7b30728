"""Logs are structured, carry context ids, and never carry a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from watcher.logging import bind, configure_logging, get_logger, unbind
from watcher.settings import LogFormat, Settings, load_settings

API_KEY = "vk_test_" + "A1b2C3d4" * 4
WEBHOOK_SECRET = "voltage-webhook-secret-" + "Z" * 12
API_TOKEN = "api-token-" + "q" * 20


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOLTAGE_API_KEY", API_KEY)
    monkeypatch.setenv("VOLTAGE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("WATCHER_API_TOKENS", API_TOKEN)
    yield load_settings()
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _log_everything_dangerous(settings: Settings) -> None:
    log = get_logger("test")
    key = settings.voltage_api_key
    assert key is not None
    log.info("calling voltage", api_key=key.get_secret_value(), headers={"x-api-key": API_KEY})
    log.warning(f"token was {API_TOKEN}", nested=[{"secret": WEBHOOK_SECRET}])
    log.info("settings", settings=repr(settings), key_obj=str(key))
    try:
        raise RuntimeError(f"request failed with key {API_KEY}")
    except RuntimeError:
        log.exception("voltage call failed")
    logging.getLogger("celery.worker").error("foreign logger saw %s", API_KEY)


@pytest.mark.parametrize("fmt", [LogFormat.JSON, LogFormat.CONSOLE])
def test_secrets_never_reach_the_log(settings: Settings, fmt: LogFormat) -> None:
    stream = io.StringIO()
    configure_logging(settings.model_copy(update={"watcher_log_format": fmt}), stream=stream)
    _log_everything_dangerous(settings)
    output = stream.getvalue()
    assert "voltage call failed" in output
    assert "foreign logger saw" in output
    for secret in (API_KEY, WEBHOOK_SECRET, API_TOKEN):
        assert secret not in output
    assert "[redacted]" in output


def test_secret_settings_do_not_leak_through_repr_or_errors(settings: Settings) -> None:
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in (API_KEY, WEBHOOK_SECRET, API_TOKEN):
            assert secret not in text


def test_json_lines_carry_bound_context(settings: Settings) -> None:
    stream = io.StringIO()
    configure_logging(
        settings.model_copy(update={"watcher_log_format": LogFormat.JSON}), stream=stream
    )
    bind(payment_id="pay-1", task_id="task-9")
    get_logger("test").info("polled", status="receiving")
    unbind("payment_id", "task_id")
    get_logger("test").info("after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "polled"
    assert lines[0]["payment_id"] == "pay-1"
    assert lines[0]["task_id"] == "task-9"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert "payment_id" not in lines[1]


def test_exceptions_render_as_structured_json(settings: Settings) -> None:
    stream = io.StringIO()
    configure_logging(
        settings.model_copy(update={"watcher_log_format": LogFormat.JSON}), stream=stream
    )
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("test").exception("failed")
    record = json.loads(stream.getvalue().splitlines()[0])
    assert record["event"] == "failed"
    assert "ValueError" in json.dumps(record["exception"])


REDIS_PASSWORD = "query-form-redis-password-77"


@pytest.mark.parametrize("fmt", [LogFormat.JSON, LogFormat.CONSOLE])
@pytest.mark.parametrize(
    "url",
    [
        f"redis://10.0.0.5:6379/0?password={REDIS_PASSWORD}",
        f"rediss://10.0.0.5:6380/0?ssl_cert_reqs=required&password={REDIS_PASSWORD}",
        f"sentinel://10.0.0.5:26379?password={REDIS_PASSWORD};sentinel://10.0.0.6:26379",
    ],
)
def test_query_form_redis_password_never_reaches_the_log(
    settings: Settings, fmt: LogFormat, url: str
) -> None:
    stream = io.StringIO()
    configured = settings.model_copy(
        update={
            "watcher_log_format": fmt,
            "watcher_redis_url": url,
            "watcher_redis_sentinel_master": "mymaster",
        }
    )
    configure_logging(configured, stream=stream)
    log = get_logger("test")
    log.info("connecting", url=url)
    log.warning(f"the password alone: {REDIS_PASSWORD}")
    logging.getLogger("kombu").error("foreign logger saw %s", url)
    output = stream.getvalue()
    assert "foreign logger saw" in output
    assert REDIS_PASSWORD not in output


@pytest.mark.parametrize("fmt", [LogFormat.JSON, LogFormat.CONSOLE])
def test_passwords_in_urls_the_settings_never_saw_are_scrubbed(
    settings: Settings, fmt: LogFormat
) -> None:
    """A URL built at run time (an embedded Redis, a subscriber with userinfo) is scrubbed
    by its shape, because the redactor cannot know its password in advance."""
    stream = io.StringIO()
    configure_logging(settings.model_copy(update={"watcher_log_format": fmt}), stream=stream)
    log = get_logger("test")
    log.info("started", url="redis://:runtime-secret-1@127.0.0.1:7000/0")
    log.info("started redis://default:runtime-secret-2@127.0.0.1:7000/0 for the children")
    logging.getLogger("celery").info("broker redis://127.0.0.1:7000/0?password=runtime-secret-3")
    log.info("posting", url="https://user:runtime-secret-4@hooks.example.com/in")
    output = stream.getvalue()
    for n in range(1, 5):
        assert f"runtime-secret-{n}" not in output
    assert "127.0.0.1:7000/0" in output  # the rest of the URL still helps
