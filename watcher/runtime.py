"""The per-process wiring: settings, Redis, the store, the Voltage client. Built once, lazily,
in the process that uses it (after Celery forks), and replaceable in tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import requests
from redis.sentinel import Sentinel

from watcher.access.audit import AuditLog
from watcher.access.rate_limit import RateLimiter
from watcher.access.tenants import TenantStore
from watcher.delivery.attempts import AttemptOutcome, DeliveryPolicy, attempt_chunk, ran_clean
from watcher.delivery.dispatch import DispatchLimits, DueChunks
from watcher.delivery.engine import DeliveryEngine
from watcher.delivery.guarded_http import guarded_session
from watcher.delivery.store import DeliveryStore
from watcher.delivery.subscriptions import SubscriptionStore
from watcher.durability import Durability
from watcher.engine.hints import HintLedger
from watcher.engine.list_health import ListHealth
from watcher.engine.list_jobs import ListJobs
from watcher.engine.schedule import PollPolicy
from watcher.engine.store import PaymentStore
from watcher.keys import Keys
from watcher.redis_url_passwords import mask_redis_url
from watcher.settings import ConfigError, Settings, get_settings
from watcher.voltage.client import VoltageClient
from watcher.voltage.purpose import Purpose
from watcher.voltage.retry import RetryPolicy

_REDIS_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
}


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """`sentinel://[:password@]host:port[/db];sentinel://host2:port...` (Celery's form) into
    the sentinels' addresses and the master's connection options."""
    hosts: list[tuple[str, int]] = []
    options: dict[str, Any] = {}
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigError(
                f"WATCHER_REDIS_URL: cannot read sentinel address {mask_redis_url(part)!r}"
            )
        hosts.append((parsed.hostname, parsed.port or 26379))
        if parsed.password:
            options["password"] = unquote(parsed.password)
        if parsed.path.strip("/").isdigit():
            options["db"] = int(parsed.path.strip("/"))
    return hosts, options


def redis_from_settings(settings: Settings) -> redis.Redis:
    url = settings.watcher_redis_url
    if not url:
        raise ConfigError(
            "WATCHER_REDIS_URL is not set (single-machine mode sets it for its children; "
            "otherwise point it at your Redis)"
        )
    if url.startswith("sentinel://"):
        hosts, options = sentinel_hosts(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, socket_timeout=5, sentinel_kwargs={"socket_timeout": 5}
        )
        master = settings.watcher_redis_sentinel_master or ""
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            master, **_REDIS_OPTIONS, **options
        )
        return client
    return redis.Redis.from_url(url, **_REDIS_OPTIONS)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    payments: PaymentStore
    poll_policy: PollPolicy
    subscriptions: SubscriptionStore
    deliveries: DeliveryStore
    delivery_policy: DeliveryPolicy
    list_health: ListHealth
    list_jobs: ListJobs
    hints: HintLedger
    audit: AuditLog
    rate_limiter: RateLimiter
    tenants: TenantStore
    clock: Callable[[], float] = time.time
    _voltage: VoltageClient | None = field(default=None, repr=False)
    _poll_voltage: VoltageClient | None = field(default=None, repr=False)
    _webhook_session: requests.Session | None = field(default=None, repr=False)
    _delivery_engine: DeliveryEngine | None = field(default=None, repr=False)
    _thread_sessions: threading.local = field(default_factory=threading.local, repr=False)
    _engine_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _confirm_pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        client = redis_from_settings(settings)
        keys = Keys(settings.watcher_redis_prefix)
        durability = Durability(
            replicas=settings.watcher_redis_min_replicas,
            timeout_ms=int(settings.watcher_redis_replica_timeout * 1000),
        )
        subscriptions = SubscriptionStore(
            client,
            keys,
            allow_private=settings.watcher_webhook_allow_private,
            durability=durability,
        )
        return cls(
            settings=settings,
            redis=client,
            payments=PaymentStore(client, keys, durability=durability),
            poll_policy=PollPolicy.from_settings(settings),
            subscriptions=subscriptions,
            deliveries=DeliveryStore(client, keys, subscriptions),
            delivery_policy=DeliveryPolicy.from_settings(settings),
            list_health=ListHealth(
                client,
                keys,
                fallback_after=settings.watcher_fallback_after,
                base_backoff=settings.watcher_sweep_interval,
                sweeps_enabled=settings.watcher_sweep_interval > 0,
            ),
            audit=AuditLog(client, keys),
            rate_limiter=RateLimiter(
                client,
                keys,
                rate=settings.watcher_api_rate_limit,
                burst=settings.watcher_api_rate_burst,
            ),
            tenants=TenantStore(client, keys),
            list_jobs=ListJobs(client, keys),
            hints=HintLedger(client, keys),
        )

    def ping(self) -> None:
        """Raises a RedisError unless the watcher's Redis answers."""
        self.redis.ping()

    def close(self) -> None:
        """Let go of the Redis connections (the API app that made this runtime stops)."""
        self.redis.close()

    def count_request(self, purpose: Purpose) -> None:
        """Every Voltage request, counted by why it was sent; counting never fails a call."""
        with contextlib.suppress(redis.exceptions.RedisError):
            self.payments.count(f"voltage_requests:{purpose}")

    @property
    def confirm_pool(self) -> ThreadPoolExecutor:
        """Threads that confirm a sweep's reports side by side (beat's process)."""
        with self._engine_lock:
            if self._confirm_pool is None:
                self._confirm_pool = ThreadPoolExecutor(
                    self.settings.watcher_confirm_concurrency, thread_name_prefix="watcher-confirm"
                )
            return self._confirm_pool

    @property
    def webhook_session(self) -> requests.Session:
        """Posts to subscribers; refuses private addresses at connect time unless allowed."""
        if self._webhook_session is None:
            self._webhook_session = guarded_session(self.settings.watcher_webhook_allow_private)
        return self._webhook_session

    @property
    def delivery_engine(self) -> DeliveryEngine:
        """This process's delivery threads (made after Celery forks, on first use)."""
        with self._engine_lock:
            if self._delivery_engine is None:
                self._delivery_engine = DeliveryEngine(
                    self.settings.watcher_delivery_concurrency,
                    self.run_delivery_chunk,
                    refill=DueChunks(self.deliveries, self.dispatch_limits, self.clock),
                )
            return self._delivery_engine

    @property
    def dispatch_limits(self) -> DispatchLimits:
        s = self.settings
        policy = self.delivery_policy
        return DispatchLimits(
            policy.lease, s.watcher_dispatch_batch, s.watcher_delivery_chunk, policy.max_in_flight
        )

    def run_delivery_chunk(self, delivery_ids: list[str]) -> bool:
        """The engine's chunk runner: True when its thread may take more."""
        return ran_clean(delivery_ids, self.attempt_chunk(delivery_ids))

    def attempt_chunk(self, delivery_ids: list[str]) -> list[AttemptOutcome]:
        """One subscriber's chunk, on a session of this thread's own: a shared Session's
        connection pool (10 per host) would be the bottleneck and drop connections."""
        session: requests.Session | None = getattr(self._thread_sessions, "session", None)
        if session is None:
            session = guarded_session(self.settings.watcher_webhook_allow_private)
            self._thread_sessions.session = session
        return attempt_chunk(
            self.deliveries, session, self.delivery_policy, delivery_ids, self.clock
        )

    @property
    def voltage(self) -> VoltageClient:
        """For creates and adoptions: retries within the full budget."""
        if self._voltage is None:
            self._voltage = VoltageClient.from_settings(self.settings)
            self._voltage.on_request = self.count_request
        return self._voltage

    @property
    def poll_voltage(self) -> VoltageClient:
        """For polls and sweeps: a short retry budget, because the schedule is the retry."""
        if self._poll_voltage is None:
            s = self.settings
            self._poll_voltage = VoltageClient.from_settings(
                s,
                retry=RetryPolicy(
                    budget=s.watcher_poll_retry_budget,
                    base_delay=s.voltage_retry_base_delay,
                    max_delay=s.voltage_retry_max_delay,
                ),
            )
            self._poll_voltage.on_request = self.count_request
        return self._poll_voltage


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 - one wiring per process, built on first use
    with _lock:
        if _runtime is None:
            _runtime = Runtime.from_settings(get_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime  # noqa: PLW0603
    with _lock:
        _runtime = runtime
