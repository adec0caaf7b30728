"""Traffic-level behaviour of the simulator: injected faults and request accounting.

Both sit in front of the `/v1` API, before authentication and routing, the way a load balancer
or a struggling upstream would: a fault answers instead of the API (so a faulted create never
creates anything), and every `/v1` request is counted, faulted or not, so benchmarks can tell
how many Voltage calls the watcher spent.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watcher.simulator.create import canonical_uuid
from watcher.simulator.errors import error_envelope

FaultKind = Literal["status", "rate_limit", "malformed", "latency"]
# Which API call a fault targets: a path substring cannot tell `.../payments` (list) from
# `.../payments/{id}` (read), a route can.
FaultRoute = Literal["list", "read", "create", "history"]

# What a half-sent answer looks like: JSON that stops in the middle of a string.
DEFAULT_MALFORMED_BODY = '{"id": "'

# Voltage's own error types for the statuses a fault usually simulates.
_STATUS_ERROR_TYPES = {
    500: "internal_error",
    503: "read_temporarily_unavailable",
}


class FaultSpec(BaseModel):
    """Body of `POST /_sim/faults`."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    status: int | None = Field(default=None, ge=400, le=599)
    count: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, ge=0.0, le=1.0)
    retry_after: int | None = Field(default=None, ge=0, le=86400)
    retry_after_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    latency: float | None = Field(default=None, gt=0.0, le=120.0)
    method: Literal["GET", "POST"] | None = None
    path: str | None = Field(default=None, min_length=1, max_length=1000)
    route: FaultRoute | None = None
    error_type: str | None = Field(default=None, min_length=1, max_length=100)
    body: str | None = Field(default=None, max_length=100_000)

    @model_validator(mode="after")
    def _check_kind(self) -> FaultSpec:
        if self.kind == "latency" and self.latency is None:
            raise ValueError("a latency fault needs `latency` (seconds to wait)")
        if self.kind != "latency" and self.latency is not None:
            raise ValueError("`latency` only applies to kind latency")
        if self.kind != "status" and self.status is not None:
            raise ValueError("`status` only applies to kind status")
        if self.kind != "malformed" and self.body is not None:
            raise ValueError("`body` only applies to kind malformed")
        return self


@dataclass
class Fault:
    """One rule. `remaining` None means unlimited; `applied` counts the times it fired."""

    id: str
    kind: FaultKind
    status: int | None
    count: int | None
    remaining: int | None
    rate: float | None
    retry_after: int | None
    retry_after_ms: int | None
    latency: float | None
    method: str | None
    path: str | None
    route: FaultRoute | None
    error_type: str | None
    body: str | None
    applied: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining == 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.route is not None and route_of(method, path) != self.route:
            return False
        return self.path is None or self.path in path

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "count": self.count,
            "remaining": self.remaining,
            "rate": self.rate,
            "retry_after": self.retry_after,
            "retry_after_ms": self.retry_after_ms,
            "latency": self.latency,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "error_type": self.error_type,
            "body": self.body,
            "applied": self.applied,
        }

    def response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body a terminal fault answers with."""
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        if self.kind == "malformed":
            body = (self.body if self.body is not None else DEFAULT_MALFORMED_BODY).encode()
            return 200, headers, body
        if self.kind == "rate_limit":
            status = 429
            error_type = self.error_type or "rate_limited"
            retry_after: int | None = self.retry_after if self.retry_after is not None else 1
            detail = "too many requests (simulated)"
        else:
            status = self.status if self.status is not None else 503
            error_type = self.error_type or _STATUS_ERROR_TYPES.get(status, "simulated_fault")
            retry_after = self.retry_after
            detail = f"simulated {status} answer (fault {self.id})"
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if self.retry_after_ms is not None:
            headers.append((b"x-retry-after-ms", str(self.retry_after_ms).encode()))
        body = json.dumps(error_envelope(error_type, detail)).encode()
        return status, headers, body


@dataclass(frozen=True)
class FaultPlan:
    """What to do with one request: wait `delay` seconds, then answer `fault` or carry on."""

    delay: float = 0.0
    fault: Fault | None = None


class FaultRegistry:
    """Ordered fault rules, consulted for every `/v1` request."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, spec: FaultSpec) -> Fault:
        fault = Fault(
            id=str(uuid.uuid4()),
            kind=spec.kind,
            status=spec.status,
            count=spec.count,
            remaining=spec.count,
            rate=spec.rate,
            retry_after=spec.retry_after,
            retry_after_ms=spec.retry_after_ms,
            latency=spec.latency,
            method=spec.method,
            path=spec.path,
            route=spec.route,
            error_type=spec.error_type,
            body=spec.body,
        )
        with self._lock:
            self._faults.append(fault)
            return replace(fault)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.describe() for fault in self._faults]

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            kept = [fault for fault in self._faults if fault.id != fault_id]
            removed = len(kept) != len(self._faults)
            self._faults = kept
            return removed

    def clear(self) -> int:
        """Remove every rule; returns how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def plan(self, method: str, path: str) -> FaultPlan:
        """Walk the rules in order: latency adds up and goes on, the first other fault answers.

        Counts are spent here, when a rule fires, so concurrent requests never overspend one.
        """
        delay = 0.0
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path):
                    continue
                if fault.rate is not None and self._rng.random() >= fault.rate:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.applied += 1
                if fault.kind == "latency":
                    delay += fault.latency or 0.0
                    continue
                return FaultPlan(delay=delay, fault=replace(fault))
        return FaultPlan(delay=delay)


# --- Accounting ---------------------------------------------------------------------------

_ROUTE = re.compile(
    r"^/v1/organizations/[^/]+/environments/[^/]+/payments"
    r"(?:/(?P<payment_id>[^/]+)(?P<history>/history)?)?/?$"
)


def classify(method: str, path: str) -> tuple[str, str | None]:
    """Route label like `GET /payments/{id}` and, for a read of one payment, its id."""
    match = _ROUTE.match(path)
    if match is None:
        return f"{method} other", None
    raw_id = match.group("payment_id")
    if raw_id is None:
        return f"{method} /payments", None
    if match.group("history"):
        return f"{method} /payments/{{id}}/history", None
    return f"{method} /payments/{{id}}", canonical_uuid(raw_id) or raw_id


_ROUTES: dict[str, FaultRoute] = {
    "GET /payments": "list",
    "GET /payments/{id}": "read",
    "POST /payments": "create",
    "GET /payments/{id}/history": "history",
}


def route_of(method: str, path: str) -> FaultRoute | None:
    """The API call a request is (`list`, `read`, `create`, `history`), None for anything else."""
    return _ROUTES.get(classify(method, path)[0])


class RequestStats:
    """Counts of `/v1` requests by route, by status, and GETs per payment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._by_route: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._per_payment: Counter[str] = Counter()

    def record(self, method: str, path: str, status: int) -> None:
        route, payment_id = classify(method, path)
        with self._lock:
            self._total += 1
            self._by_route[route] += 1
            self._by_status[str(status)] += 1
            if payment_id is not None and method == "GET":
                self._per_payment[payment_id] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._total,
                "by_route": dict(self._by_route),
                "by_status": dict(self._by_status),
                "per_payment": dict(self._per_payment),
            }

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._by_route.clear()
            self._by_status.clear()
            self._per_payment.clear()
