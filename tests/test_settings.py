"""Bad settings fail at start-up naming the variable; good ones parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.settings import ConfigError, LogFormat, load_settings

WATCHER_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "VOLTAGE_"))}


def test_defaults_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.voltage_api_url == "https://voltageapi.com/v1"
    assert settings.watcher_log_format is LogFormat.AUTO
    assert settings.watcher_redis_url is None
    assert settings.watcher_webhook_retry_schedule[0] == 0
    assert sum(settings.watcher_webhook_retry_schedule) > 2.5 * 86400


def test_csv_lists_and_env_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WATCHER_API_TOKENS", "token-aaaaaaaaaaaaaaaa, token-bbbbbbbbbbbbbbbb")
    monkeypatch.setenv("WATCHER_WEBHOOK_RETRY_SCHEDULE", "0,1,2.5")
    monkeypatch.setenv("WATCHER_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("VOLTAGE_API_URL", "http://127.0.0.1:9/v1/")
    settings = load_settings()
    assert [t.get_secret_value() for t in settings.watcher_api_tokens] == [
        "token-aaaaaaaaaaaaaaaa",
        "token-bbbbbbbbbbbbbbbb",
    ]
    assert settings.watcher_webhook_retry_schedule == [0, 1, 2.5]
    assert settings.watcher_webhook_allow_private is True
    assert settings.voltage_api_url == "http://127.0.0.1:9/v1"


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("WATCHER_LOG_FORMAT=json\nVOLTAGE_WALLET_ID=w-1\n")
    settings = load_settings()
    assert settings.watcher_log_format is LogFormat.JSON
    assert settings.voltage_wallet_id == "w-1"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WATCHER_LOG_FORMAT", "xml", "WATCHER_LOG_FORMAT: Input should be 'auto', 'json' or"),
        ("WATCHER_REDIS_URL", "http://x", "WATCHER_REDIS_URL: expected a redis://"),
        ("VOLTAGE_API_URL", "voltageapi.com", "VOLTAGE_API_URL: expected an http://"),
        ("WATCHER_WEBHOOK_RETRY_SCHEDULE", "1,-5", "WATCHER_WEBHOOK_RETRY_SCHEDULE: delays must"),
        ("WATCHER_WEBHOOK_RETRY_SCHEDULE", "1,soon", "WATCHER_WEBHOOK_RETRY_SCHEDULE"),
        ("VOLTAGE_READ_TIMEOUT", "0", "VOLTAGE_READ_TIMEOUT: Input should be greater than 0"),
        ("WATCHER_WEBHOOK_ALLOW_PRIVATE", "perhaps", "WATCHER_WEBHOOK_ALLOW_PRIVATE"),
    ],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)


def test_short_api_token_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WATCHER_API_TOKENS", "short-secret")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "WATCHER_API_TOKENS" in str(info.value)
    assert "short-secret" not in str(info.value)


def test_missing_voltage_credentials_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOLTAGE_API_KEY", "k" * 20)
    settings = load_settings()
    with pytest.raises(ConfigError) as info:
        settings.require_voltage()
    message = str(info.value)
    assert "VOLTAGE_ORGANIZATION_ID" in message
    assert "VOLTAGE_ENVIRONMENT_ID" in message
    assert "VOLTAGE_WALLET_ID" in message
    assert "VOLTAGE_API_KEY" not in message


def watcher_config(tmp_path: Path, *, check: bool, **env: str) -> subprocess.CompletedProcess[str]:
    """`watcher config` in a clean directory with only these WATCHER_/VOLTAGE_ variables."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", "config"],
        cwd=tmp_path,
        env={**WATCHER_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_bad_setting_stops_the_command_at_start_up(tmp_path: Path) -> None:
    result = watcher_config(tmp_path, check=False, WATCHER_LOG_FORMAT="yaml")
    assert result.returncode == 2
    assert "WATCHER_LOG_FORMAT" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_command_masks_secrets(tmp_path: Path) -> None:
    secret = "vk_live_" + "9" * 24
    result = watcher_config(tmp_path, check=True, VOLTAGE_API_KEY=secret)
    assert secret not in result.stdout
    assert '"voltage_api_key": "**********"' in result.stdout


def test_env_example_documents_every_setting() -> None:
    from watcher.settings import Settings

    example = (Path(__file__).parent.parent / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].strip()
        for line in example.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    expected = {name.upper() for name in Settings.model_fields}
    assert expected - documented == set()
    assert documented - expected == set()


def test_env_example_as_dotenv_gives_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text((Path(__file__).parent.parent / ".env.example").read_text())
    from_example = load_settings()
    (tmp_path / ".env").unlink()
    defaults = load_settings()
    assert from_example.model_dump() == defaults.model_dump()
    with pytest.raises(ConfigError, match="VOLTAGE_API_KEY"):
        from_example.require_voltage()


def test_redis_password_is_masked_and_redacted(tmp_path: Path) -> None:
    url = "redis://:hunter2-redis-pass@10.0.0.5:6379/0"
    result = watcher_config(tmp_path, check=True, WATCHER_REDIS_URL=url)
    assert "hunter2-redis-pass" not in result.stdout
    assert "redis://:**********@10.0.0.5:6379/0" in result.stdout
    settings = load_settings(watcher_redis_url="redis://:hunter2-redis-pass@10.0.0.5:6379/0")
    assert "hunter2-redis-pass" in settings.secret_values()


# --- Redis passwords, in every form a Redis URL can carry one --------------------------------

REDIS_PASSWORD = "hunter2-redis-pass"
REDIS_URLS_WITH_PASSWORDS = [
    f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0",
    f"redis://watcher:{REDIS_PASSWORD}@10.0.0.5:6379/0",
    f"redis://10.0.0.5:6379/0?password={REDIS_PASSWORD}",
    f"redis://10.0.0.5:6379/0?db=0&password={REDIS_PASSWORD}&socket_timeout=5",
    f"rediss://10.0.0.5:6380/0?ssl_cert_reqs=required&password={REDIS_PASSWORD}",
    f"rediss://:{REDIS_PASSWORD}@10.0.0.5:6380/0?password={REDIS_PASSWORD}",
    f"unix://:{REDIS_PASSWORD}@/run/redis/redis.sock?db=0",
    f"unix:///run/redis/redis.sock?password={REDIS_PASSWORD}",
    f"redis://:{REDIS_PASSWORD.replace('-', '%2D')}@10.0.0.5:6379/0",
    f"redis://:{REDIS_PASSWORD}/x@10.0.0.5:6379/0",
    f"sentinel://:{REDIS_PASSWORD}@10.0.0.5:26379;sentinel://:{REDIS_PASSWORD}@10.0.0.6:26379/0",
    f"sentinel://10.0.0.5:26379?password={REDIS_PASSWORD};sentinel://10.0.0.6:26379",
]


def _visible(text: str) -> bool:
    """The password, plain or percent-encoded, anywhere in `text`."""
    return REDIS_PASSWORD in text or REDIS_PASSWORD.replace("-", "%2D") in text


@pytest.mark.parametrize("url", REDIS_URLS_WITH_PASSWORDS)
def test_config_command_masks_every_form_of_redis_password(tmp_path: Path, url: str) -> None:
    env = {"WATCHER_REDIS_URL": url}
    if url.startswith("sentinel://"):
        env["WATCHER_REDIS_SENTINEL_MASTER"] = "mymaster"
    result = watcher_config(tmp_path, check=True, **env)
    assert not _visible(result.stdout + result.stderr)
    shown = json.loads(result.stdout)["watcher_redis_url"]
    assert "**********" in shown
    assert shown.split(":")[0] == url.split(":", maxsplit=1)[0]  # the scheme still shows


@pytest.mark.parametrize("url", REDIS_URLS_WITH_PASSWORDS)
def test_every_form_of_redis_password_is_a_secret(url: str) -> None:
    settings = load_settings(
        watcher_redis_url=url, watcher_redis_sentinel_master="mymaster", _env_file=None
    )
    assert any(REDIS_PASSWORD in value for value in settings.secret_values())
    assert not _visible(settings.redis_url_for_display() or "")
    assert not _visible(repr(settings))


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{REDIS_PASSWORD}@10.0.0.5:6379/0",
        f"http://10.0.0.5:6379/0?password={REDIS_PASSWORD}",
        f"10.0.0.5:6379?password={REDIS_PASSWORD}",
        f":{REDIS_PASSWORD}@10.0.0.5:6379",
    ],
)
def test_bad_redis_url_scheme_names_the_variable_and_hides_the_password(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(watcher_redis_url=url, _env_file=None)
    message = str(info.value)
    assert "WATCHER_REDIS_URL" in message
    assert "**********" in message  # the URL is shown, masked
    assert not _visible(message)
    result = watcher_config(tmp_path, check=False, WATCHER_REDIS_URL=url)
    assert result.returncode == 2
    assert "WATCHER_REDIS_URL" in result.stderr
    assert not _visible(result.stdout + result.stderr)


def test_broker_url_is_never_a_silent_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="WATCHER_REDIS_URL is not set"):
        load_settings().broker_url()
    url = f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/3"
    monkeypatch.setenv("WATCHER_REDIS_URL", url)
    assert load_settings().broker_url() == url


def test_unreadable_sentinel_address_error_hides_the_password() -> None:
    from watcher.runtime import sentinel_hosts

    with pytest.raises(ConfigError) as info:
        sentinel_hosts(f"sentinel://:{REDIS_PASSWORD}@h1:26379;redis://:{REDIS_PASSWORD}@h2")
    assert "WATCHER_REDIS_URL" in str(info.value)
    assert "redis://:**********@h2" in str(info.value)
    assert not _visible(str(info.value))


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_refuse_to_start_without_a_redis_url(command: str, tmp_path: Path) -> None:
    """Unset used to mean redis://127.0.0.1:6379/0: someone else's Redis, or none, silently."""
    import subprocess
    import sys

    from tests.support import clean_env

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "watcher", command, "--loglevel", "INFO"],
        env=clean_env(WATCHER_DATA_DIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "WATCHER_REDIS_URL is not set" in result.stderr
    assert "127.0.0.1:6379" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fast", "WATCHER_POLL_SCHEDULE: 'fast' is not an AGE:INTERVAL pair of seconds"),
        (
            "60:2,a:b",
            "WATCHER_POLL_SCHEDULE: 'a:b' is not an AGE:INTERVAL pair of numbers (got '60:2,a:b')",
        ),
    ],
)
def test_a_bad_poll_schedule_is_named_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: str
) -> None:
    """Issue 13: the message said "got 'fast' (got 'fast')"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WATCHER_POLL_SCHEDULE", value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert str(excinfo.value).splitlines()[1].strip() == expected


def test_every_queue_has_its_own_exchange() -> None:
    """Issue 13: the worker's banner showed every queue with `exchange=watcher.poll`."""
    from watcher.celery import ALL_QUEUES, app

    queues = {q.name: (q.exchange.name, q.routing_key) for q in app.conf.task_queues}
    assert queues == {name: (name, name) for name in ALL_QUEUES}
    for task, queue in [
        ("watcher.deliver", "watcher.deliver"),
        ("watcher.forget_old", "watcher.control"),
    ]:
        route = app.amqp.router.route({}, task)["queue"]
        assert (route.name, route.exchange.name) == (queue, queue)
