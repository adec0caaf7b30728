"""Bad settings fail at start-up naming the variable; good ones parse."""

from __future__ import annotations

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
