"""The one settings class, read from the environment and `.env`.

Field names are the lower-cased environment variable names, so an error can name the exact
variable the operator has to fix.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from watcher.redis_url_passwords import mask_redis_url, redis_url_passwords


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable and what it expects."""


# The slowest API rate limit: a request every 100 s (slower is a typo for 0, which is off).
MIN_API_RATE = 0.01

VOLTAGE_CREDENTIAL_FIELDS = (
    "voltage_api_key",
    "voltage_organization_id",
    "voltage_environment_id",
    "voltage_wallet_id",
)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything the watcher can be told; `.env.example` documents each field."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- Voltage -------------------------------------------------------------------------
    voltage_api_url: str = "https://voltageapi.com/v1"
    voltage_api_key: SecretStr | None = None
    voltage_organization_id: str | None = None
    voltage_environment_id: str | None = None
    voltage_wallet_id: str | None = None
    voltage_webhook_secret: SecretStr | None = None
    voltage_webhook_tolerance: int = Field(default=300, ge=1, le=3600)
    voltage_connect_timeout: float = Field(default=3.05, gt=0, le=60)
    voltage_read_timeout: float = Field(default=10.0, gt=0, le=300)
    voltage_retry_budget: float = Field(default=20.0, ge=0, le=600)
    voltage_retry_base_delay: float = Field(default=0.2, gt=0, le=60)
    voltage_retry_max_delay: float = Field(default=5.0, gt=0, le=600)
    voltage_invoice_wait: float = Field(default=10.0, gt=0, le=300)

    # --- Redis and the process --------------------------------------------------------------
    # Not in repr(): the URL may carry the Redis password (`redis_url_for_display()` masks it).
    watcher_redis_url: str | None = Field(default=None, repr=False)
    watcher_redis_sentinel_master: str | None = None
    watcher_redis_min_replicas: int = Field(default=0, ge=0, le=16)
    watcher_redis_replica_timeout: float = Field(default=2.0, gt=0, le=60)
    watcher_data_dir: Path = Path("./data")
    watcher_redis_prefix: str = Field(default="vw", pattern=r"^[A-Za-z0-9_.-]{1,32}$")

    # --- Watching: the poll schedule, dispatcher and list sweeps ---------------------------------
    # Per-payment cadence while list calls fail (fallback); healthy sweeps make it moot.
    watcher_poll_schedule: Annotated[list[tuple[float, float]], NoDecode] = Field(
        default_factory=lambda: [(60.0, 2.0), (600.0, 5.0), (3600.0, 30.0), (86400.0, 120.0)]
    )
    watcher_poll_sparse_interval: float = Field(default=600.0, gt=0, le=86400)
    watcher_generating_poll_interval: float = Field(default=0.5, gt=0, le=60)
    watcher_not_found_window: float = Field(default=120.0, ge=0, le=86400)
    watcher_expiry_grace: float = Field(default=5.0, ge=0, le=3600)
    watcher_poll_hard_limit: float = Field(default=3600.0, ge=0, le=30 * 86400)
    watcher_max_watch_age: float = Field(default=2 * 86400.0, gt=0, le=60 * 86400)
    watcher_poll_error_backoff_max: float = Field(default=300.0, gt=0, le=86400)
    watcher_poll_retry_budget: float = Field(default=2.0, ge=0, le=60)
    watcher_claim_lease: float = Field(default=30.0, gt=0, le=3600)
    watcher_dispatch_interval: float = Field(default=1.0, gt=0, le=60)
    watcher_dispatch_batch: int = Field(default=1000, ge=1, le=100_000)
    watcher_poll_chunk: int = Field(default=25, ge=1, le=1000)
    watcher_sweep_interval: float = Field(default=1.0, ge=0, le=3600)
    watcher_sweep_overlap: float = Field(default=10.0, ge=0, le=3600)
    watcher_sweep_max_pages: int = Field(default=10, ge=1, le=1000)
    watcher_reconcile_interval: float = Field(default=60.0, ge=0, le=86400)
    watcher_reconcile_page_interval: float = Field(default=5.0, gt=0, le=3600)
    watcher_fallback_after: float = Field(default=5.0, ge=0, le=3600)
    watcher_confirm_concurrency: int = Field(default=16, ge=1, le=256)

    # --- HTTP API --------------------------------------------------------------------------
    watcher_api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    watcher_api_invoice_wait: float = Field(default=5.0, gt=0, le=60)
    watcher_api_max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024)
    # Requests per second each API token may make (a token bucket of `burst`); 0: no limit.
    watcher_api_rate_limit: float = Field(default=100.0, ge=0, le=100_000)
    watcher_api_rate_burst: int = Field(default=200, ge=1, le=1_000_000)

    # --- Webhook delivery -------------------------------------------------------------------
    watcher_webhook_allow_private: bool = False
    watcher_webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [
            0.0,
            5.0,
            300.0,
            1800.0,
            7200.0,
            18000.0,
            36000.0,
            50400.0,
            72000.0,
            86400.0,
        ]
    )

    watcher_webhook_connect_timeout: float = Field(default=5.0, gt=0, le=60)
    watcher_webhook_timeout: float = Field(default=15.0, gt=0, le=120)
    watcher_webhook_max_in_flight: int = Field(default=8, ge=1, le=1000)
    watcher_webhook_retry_after_max: float = Field(default=3600.0, ge=0, le=86400)
    watcher_webhook_secret_overlap: float = Field(default=86400.0, ge=0, le=30 * 86400)
    watcher_webhook_disable_after: float = Field(default=5 * 86400.0, gt=0, le=365 * 86400)
    watcher_delivery_lease: float = Field(default=120.0, gt=0, le=3600)
    watcher_delivery_chunk: int = Field(default=10, ge=1, le=1000)
    watcher_delivery_concurrency: int = Field(default=64, ge=1, le=1024)

    # --- Retention ---------------------------------------------------------------------------
    watcher_retention: float = Field(default=30 * 86400.0, ge=3600, le=3650 * 86400)

    # --- Monitoring --------------------------------------------------------------------------
    watcher_flower_basic_auth: SecretStr | None = None

    # --- Logging ---------------------------------------------------------------------------
    watcher_log_format: LogFormat = LogFormat.AUTO
    watcher_log_level: str = Field(
        default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$"
    )

    @field_validator(
        "voltage_api_key",
        "voltage_organization_id",
        "voltage_environment_id",
        "voltage_wallet_id",
        "voltage_webhook_secret",
        "watcher_flower_basic_auth",
        "watcher_redis_sentinel_master",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`VOLTAGE_WALLET_ID=` in a .env means "not set", not "the empty id"."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("watcher_flower_basic_auth")
    @classmethod
    def _check_basic_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for pair in value.get_secret_value().split(","):
            user, sep, password = pair.partition(":")
            if not sep or not user or len(password) < 8:
                raise ValueError("expected user:password pairs, comma-separated, passwords >= 8")
        return value

    @field_validator("voltage_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("watcher_redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
            # describe_validation_error() shows the value masked, never as given.
            raise ValueError("expected a redis://, rediss://, unix:// or sentinel:// URL")
        return value

    @field_validator("watcher_api_tokens", "watcher_webhook_retry_schedule", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("watcher_api_tokens")
    @classmethod
    def _check_tokens(cls, value: list[SecretStr]) -> list[SecretStr]:
        for token in value:
            if len(token.get_secret_value()) < 16:
                raise ValueError("each token must be at least 16 characters long")
        return value

    @field_validator("watcher_webhook_retry_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("expected at least one delay in seconds")
        if any(delay < 0 for delay in value):
            raise ValueError("delays must be zero or positive seconds")
        return value

    @field_validator("watcher_poll_schedule", mode="before")
    @classmethod
    def _parse_poll_schedule(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        steps = []
        for part in _split_csv(value):
            age, sep, interval = part.partition(":")
            if not sep:
                raise ValueError(f"{part!r} is not an AGE:INTERVAL pair of seconds")
            try:
                steps.append((float(age), float(interval)))
            except ValueError:
                raise ValueError(f"{part!r} is not an AGE:INTERVAL pair of numbers") from None
        return steps

    @field_validator("watcher_poll_schedule")
    @classmethod
    def _check_poll_schedule(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not value:
            raise ValueError("expected at least one AGE:INTERVAL pair")
        ages = [age for age, _ in value]
        if ages != sorted(ages) or len(set(ages)) != len(ages):
            raise ValueError("ages must be strictly increasing")
        if any(interval <= 0 for _, interval in value):
            raise ValueError("intervals must be positive seconds")
        return value

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        retrying = sum(self.watcher_webhook_retry_schedule)
        if self.watcher_retention <= retrying:
            raise ValueError(
                f"WATCHER_RETENTION ({self.watcher_retention:g} s) must exceed the whole "
                f"WATCHER_WEBHOOK_RETRY_SCHEDULE ({retrying:g} s), or events are forgotten "
                "while their deliveries still retry"
            )
        return self

    @model_validator(mode="after")
    def _check_sentinel(self) -> Settings:
        url = self.watcher_redis_url or ""
        if url.startswith("sentinel://") and not self.watcher_redis_sentinel_master:
            raise ValueError(
                "WATCHER_REDIS_SENTINEL_MASTER must name the monitored master when "
                "WATCHER_REDIS_URL is a sentinel:// URL"
            )
        return self

    @model_validator(mode="after")
    def _check_delivery_lease(self) -> Settings:
        longest = self.watcher_webhook_connect_timeout + self.watcher_webhook_timeout
        if self.watcher_delivery_lease <= longest:
            raise ValueError(
                "WATCHER_DELIVERY_LEASE must exceed WATCHER_WEBHOOK_CONNECT_TIMEOUT + "
                f"WATCHER_WEBHOOK_TIMEOUT ({longest:g} s), or slow attempts run twice"
            )
        return self

    @field_validator("watcher_api_rate_limit")
    @classmethod
    def _check_rate_limit(cls, rate: float) -> float:
        if 0 < rate < MIN_API_RATE:
            raise ValueError(f"must be 0 (no limit) or at least {MIN_API_RATE} requests a second")
        return rate

    @model_validator(mode="after")
    def _check_delays(self) -> Settings:
        if self.voltage_retry_max_delay < self.voltage_retry_base_delay:
            raise ValueError(
                "VOLTAGE_RETRY_MAX_DELAY must not be smaller than VOLTAGE_RETRY_BASE_DELAY"
            )
        return self

    def require_voltage(self) -> None:
        """Fail naming every missing credential; commands that talk to Voltage call this."""
        missing = [name.upper() for name in VOLTAGE_CREDENTIAL_FIELDS if not getattr(self, name)]
        if missing:
            raise ConfigError(
                "missing Voltage settings: "
                + ", ".join(missing)
                + " (set them in the environment or .env; see .env.example)"
            )

    def redis_url_for_display(self) -> str | None:
        """The Redis URL with every password masked, for `watcher config`, logs and errors."""
        url = self.watcher_redis_url
        return mask_redis_url(url) if url else url

    def broker_url(self) -> str:
        """The Redis URL Celery uses as broker. Unset is an error, not 127.0.0.1: a silent
        default would run the worker against some other Redis, or none, and say nothing."""
        if not self.watcher_redis_url:
            raise ConfigError(
                "WATCHER_REDIS_URL is not set: the worker, beat and Flower need the Redis that "
                "holds the watcher's state (set it in the environment or .env; `watcher up` "
                "sets it for the processes it starts)"
            )
        return self.watcher_redis_url

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for the log redactor."""
        secrets = [self.voltage_api_key, self.voltage_webhook_secret, *self.watcher_api_tokens]
        values = [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]
        values += redis_url_passwords(self.watcher_redis_url or "")
        if self.watcher_flower_basic_auth is not None:
            for pair in self.watcher_flower_basic_auth.get_secret_value().split(","):
                values.append(pair)
                values.append(pair.partition(":")[2])
        return values


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into lines that name the environment variable to fix."""
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]).upper() if item["loc"] else "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        value = item.get("input")
        if name == "WATCHER_REDIS_URL" and isinstance(value, str):
            value = mask_redis_url(value)
        hidden = name in _SECRET_NAMES or isinstance(value, dict)
        # A validator that already quotes the input need not have it repeated.
        shown = "" if hidden or repr(value) in message else f" (got {value!r})"
        lines.append(f"{name}: {message}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


_SECRET_NAMES = {
    "VOLTAGE_API_KEY",
    "VOLTAGE_WEBHOOK_SECRET",
    "WATCHER_API_TOKENS",
    "WATCHER_FLOWER_BASIC_AUTH",
}


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into a `ConfigError` that names variables."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once.

    A `watcher up` running on the same data directory fills in what they leave unset (its
    embedded Redis, its simulator; watcher/stack.py), for every part of the process alike: the
    CLI's Redis client and the Celery app it sends tasks with must not disagree.
    """
    from watcher.stack import with_stack

    return with_stack(load_settings())
