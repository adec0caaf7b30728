"""How the demo talks to the watcher (its HTTP API only) and to the simulator (`/_sim`, to
"pay"), every call bounded by the run's one deadline."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests


class DemoError(Exception):
    """Something the demo needed did not happen; the message says what."""


class Deadline:
    """The run's `--timeout`: one budget from start-up to the verdict."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class DemoClient:
    """The demo's HTTP side: the watcher's API (with a token) and the simulator's `/_sim`."""

    api_url: str
    simulator_url: str
    token: str
    deadline: Deadline
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.trust_env = False  # loopback only: never through an HTTP proxy
        self.http.headers["authorization"] = f"Bearer {self.token}"

    def _out_of_time(self) -> None:
        if self.deadline.expired():
            raise DemoError(f"gave up after {self.deadline.seconds:g} s (--timeout)")

    def _timeout(self) -> float:
        self._out_of_time()
        return min(10.0, self.deadline.remaining())

    def api(self, method: str, path: str, body: Any = None) -> requests.Response:
        try:
            return self.http.request(
                method, f"{self.api_url}{path}", json=body, timeout=self._timeout()
            )
        except requests.RequestException as exc:
            self._out_of_time()
            raise DemoError(f"the watcher API did not answer {method} {path}: {exc}") from None

    def api_json(self, method: str, path: str, body: Any, ok: tuple[int, ...]) -> dict[str, Any]:
        response = self.api(method, path, body)
        if response.status_code not in ok:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text}")
        data = response.json()
        if not isinstance(data, dict):
            raise DemoError(f"{method} {path} answered something that is not a JSON object")
        return data

    def simulate(self, payment_id: str, action: str) -> None:
        url = f"{self.simulator_url}/_sim/payments/{payment_id}/{action}"
        try:
            response = self.http.post(url, timeout=self._timeout())
        except requests.RequestException as exc:
            self._out_of_time()
            raise DemoError(f"the simulator did not answer POST {url}: {exc}") from None
        if response.status_code != 200:
            raise DemoError(f"POST {url} answered {response.status_code}: {response.text}")

    def create_payment(self, amount_msats: int, description: str) -> dict[str, Any]:
        body = {"amount_msats": amount_msats, "description": description}
        payment = self.api_json("POST", "/v1/payments", body, ok=(201, 202))
        payment_id = str(payment["id"])
        # 202: created, but Voltage has not produced the invoice yet; it comes shortly.
        while not payment.get("payment_request"):
            if self.deadline.remaining() <= 0:
                raise DemoError(f"payment {payment_id} never got its BOLT11 invoice")
            time.sleep(0.1)
            payment = self.api_json("GET", f"/v1/payments/{payment_id}", None, ok=(200,))
        return payment

    def wait_ready(self, alive: Callable[[], str | None]) -> None:
        """Until the API says ready (Redis answers) and the simulator answers its health."""
        checks = {
            f"{self.api_url}/readyz": "the watcher API",
            f"{self.simulator_url}/_sim/health": "the Voltage simulator",
        }
        pending = dict(checks)
        while pending:
            dead = alive()
            if dead:
                raise DemoError(dead)
            for url in list(pending):
                with contextlib.suppress(requests.RequestException):
                    if self.http.get(url, timeout=min(1.0, self._timeout())).status_code == 200:
                        del pending[url]
            if pending:
                if self.deadline.expired():
                    raise DemoError(
                        "not ready in time: " + ", ".join(pending.values()) + " did not answer"
                    )
                time.sleep(0.1)
