"""The detection bench's stack: redis-server, the simulator, per watcher deployment the Procfile's
worker and beat (plus `watcher api` for the hint side), and the subscriber they deliver to.

Everything is ours and on loopback. Each deployment has its own Redis database and wallet, and
one subscription (filtered to its wallet) pointing at its own path on the bench's receiver.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    Child,
    beat_ready,
    child_env,
    procfile_beat,
    procfile_worker,
    start_simulator,
    wait_for,
    worker_ready,
)
from bench.detection_plan import Params
from bench.receiver import WebhookReceiver
from watcher.logging import configure_logging
from watcher.redis_server import RedisServer, free_port
from watcher.runtime import Runtime
from watcher.settings import Settings, load_settings

API_KEY = "bench-sim-key-0123456789abcdef"
ORG_ID = "org-bench"
ENV_ID = "env-bench"
WATCHER_WALLET = "wallet-bench-watcher"
HINT_WALLET = "wallet-bench-hint"
NAIVE_WALLET = "wallet-bench-naive"
HINT_SECRET = "bench-voltage-webhook-secret-0123456789"  # noqa: S105 - the bench's own
API_TOKEN = "bench-api-token-0123456789abcdef"  # noqa: S105 - the bench's own API


class Deployment:
    """One watcher deployment: a Redis database, the Procfile's worker and beat, a subscription
    to the bench's receiver, and (for the hint side) `watcher api` with the ingress on."""

    def __init__(self, name: str, db: int, wallet: str, *, api: bool) -> None:
        self.name = name
        self.db = db
        self.wallet = wallet
        self.with_api = api
        self.suffix = "" if name == "watcher" else f"-{name}"
        self.path = f"/hooks/{name}"  # its subscription's path on the receiver
        self.values: dict[str, str] = {}
        self.settings: Settings | None = None
        self.runtime: Runtime | None = None
        self.worker: Child | None = None
        self.beat: Child | None = None
        self.api: Child | None = None
        self.api_port = 0

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.api, self.worker, self.beat) if c is not None]

    def worker_up(self) -> bool:
        assert self.worker is not None
        return worker_ready(self.rt.redis.smembers, self.worker)

    def beat_up(self) -> bool:
        assert self.beat is not None
        return beat_ready(self.rt.store.counters, self.beat)


class Stack:
    """redis-server + simulator process + receiver + per deployment worker and beat (+ API)."""

    def __init__(self, params: Params, tmp: Path) -> None:
        self.params = params
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis")
        self.sim_port = 0
        self.simulator: Child | None = None
        self.receiver = WebhookReceiver()
        self.deployments = [Deployment("watcher", 0, WATCHER_WALLET, api=False)]
        if params.hint:
            self.deployments.append(Deployment("hint", 1, HINT_WALLET, api=True))
        self.http = requests.Session()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def payments_url(self) -> str:
        return f"{self.base_url}/organizations/{ORG_ID}/environments/{ENV_ID}/payments"

    @property
    def watcher(self) -> Deployment:
        return self.deployments[0]

    @property
    def rt(self) -> Runtime:
        return self.watcher.rt

    @property
    def settings(self) -> Settings | None:
        return self.watcher.settings

    def deployment(self, name: str) -> Deployment:
        return next(d for d in self.deployments if d.name == name)

    def start(self) -> None:
        self.redis.start()
        self.receiver.start()
        self.sim_port = free_port()
        self.simulator = start_simulator(
            self.sim_port, API_KEY, generating_delay=0.05, cwd=self.tmp, http=self.http
        )
        for deployment in self.deployments:
            self._configure(deployment)
            self._subscribe(deployment)
        assert self.watcher.settings is not None
        configure_logging(self.watcher.settings)

    def _configure(self, deployment: Deployment) -> None:
        data_dir = self.tmp / f"data{deployment.suffix}"
        data_dir.mkdir(exist_ok=True)
        redis_url = self.redis.url.rsplit("/", 1)[0] + f"/{deployment.db}"
        values = {
            "WATCHER_REDIS_URL": redis_url,
            "VOLTAGE_API_URL": self.base_url,
            "VOLTAGE_API_KEY": API_KEY,
            "VOLTAGE_ORGANIZATION_ID": ORG_ID,
            "VOLTAGE_ENVIRONMENT_ID": ENV_ID,
            "VOLTAGE_WALLET_ID": deployment.wallet,
            "WATCHER_DATA_DIR": str(data_dir),
            "WATCHER_LOG_FORMAT": "json",
            "WATCHER_LOG_LEVEL": "WARNING",
            "WATCHER_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        }
        optional = {
            "WATCHER_POLL_SCHEDULE": self.params.poll_schedule,
            "WATCHER_SWEEP_INTERVAL": self.params.sweep_interval,
            "WATCHER_DISPATCH_INTERVAL": self.params.dispatch_interval,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        if deployment.with_api:
            values["VOLTAGE_WEBHOOK_SECRET"] = HINT_SECRET
            values["WATCHER_API_TOKENS"] = API_TOKEN
        deployment.values = values
        deployment.settings = load_settings(**{k.lower(): v for k, v in values.items()})
        deployment.runtime = Runtime.from_settings(deployment.settings)

    def _subscribe(self, deployment: Deployment) -> None:
        """One subscription for this deployment's wallet, to its own path on the receiver."""
        _sub, secret = deployment.rt.subscriptions.create(
            url=self.receiver.url(deployment.path),
            wallet_id=deployment.wallet,
            description=f"bench {deployment.name}",
        )
        self.receiver.add_path(deployment.path, secret)

    def start_celery(self) -> None:
        for deployment in self.deployments:
            self._start_processes(deployment)
        for deployment in self.deployments:
            for what, ready in (
                ("worker to consume", deployment.worker_up),
                ("beat to run its control loop", deployment.beat_up),
            ):
                wait_for(
                    f"the {deployment.name} {what}",
                    ready,
                    timeout=90,
                    children=deployment.children,
                )
            if deployment.api is not None:
                wait_for(
                    f"the {deployment.name} API",
                    partial(self.api_ready, deployment),
                    timeout=60,
                    children=deployment.children,
                )

    def api_ready(self, deployment: Deployment) -> bool:
        return self.http.get(f"{deployment.api_url}/readyz", timeout=1).ok

    def _start_processes(self, deployment: Deployment) -> None:
        env = child_env(deployment.values)
        suffix = deployment.suffix
        # The Procfile's layout; a second deployment on this host only gets its own node name.
        node = f"bench{suffix}@%h" if suffix else None
        worker = procfile_worker(self.params.worker_concurrency, node)
        deployment.worker = Child(f"worker{suffix}", worker, env, self.tmp).start()
        schedule = Path(deployment.values["WATCHER_DATA_DIR"]) / "celerybeat-schedule"
        deployment.beat = Child(f"beat{suffix}", procfile_beat(schedule), env, self.tmp).start()
        if deployment.with_api:
            deployment.api_port = free_port()
            api = [sys.executable, "-m", "watcher", "api", "--host", "127.0.0.1"]
            deployment.api = Child(
                f"api{suffix}", [*api, "--port", str(deployment.api_port)], env, self.tmp
            ).start()

    def celery_alive(self) -> bool:
        return all(c.alive for d in self.deployments for c in d.children)

    def children(self) -> list[Child | None]:
        return [self.simulator, *(c for d in self.deployments for c in d.children)]

    def stop_celery(self) -> None:
        for deployment in self.deployments:
            for child in (deployment.api, deployment.beat, deployment.worker):
                if child is not None:
                    child.stop()

    def stop(self) -> None:
        self.stop_celery()
        if self.simulator is not None:
            self.simulator.stop()
        for deployment in self.deployments:
            if deployment.runtime is not None:
                with contextlib.suppress(Exception):
                    deployment.runtime.redis.close()
        with contextlib.suppress(Exception):
            self.receiver.stop()
        self.redis.stop()
        self.http.close()
        for session in self._sessions:
            session.close()

    # --- the simulator's control surface ---------------------------------------------------------
    def _session(self) -> requests.Session:
        """One Session per thread: settles and fails are made from a small pool."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self._sessions.append(session)
        return session

    def control(self, method: str, path: str) -> Any:
        response = self._session().request(method, f"{self.root_url}/_sim{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control("GET", "/stats")
        return stats
