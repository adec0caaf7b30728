"""The detection bench's sides (the watcher, the watcher told by Voltage's webhooks, the naive
poller) and its payment classes, apart from the run (`bench.detection`) so that its report
imports them without importing `__main__` a second time."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bench import harness as h
from bench.harness import API_KEY, ENV_ID, ORG_ID, Stack
from bench.naive import NaiveLoop
from bench.receiver import Receiver
from watcher.api import ingress
from watcher.engine.watching import create_and_watch
from watcher.launcher import wait_ready, watcher_command
from watcher.voltage.client import VoltageClient

WALLETS = {"watcher": "wallet-bench-watcher", "hint": "wallet-bench-hint",
           "naive": "wallet-bench-naive"}  # fmt: skip
HINT_SECRET = "bench-voltage-webhook-secret-0123456789"  # noqa: S105 - the bench's own
API_TOKEN = "bench-api-token-0123456789abcdef"  # noqa: S105 - the bench's own API
CLASSES = {  # a payment's class: its label, the final status it must reach, what is done to it
    "paid_early": ("paid within 60 s", "completed", "settle"),
    "paid_late": ("paid after 60 s", "completed", "settle"),
    "expired": ("never paid: expired", "expired", None),
    "failed": ("failed", "failed", "fail"),
    "settled": ("settled", "completed", "settle"),  # the latency plan's
    "untouched": ("untouched", None, None),
}
MIX_CLASSES = ("paid_early", "paid_late", "expired", "failed")  # offsets from each creation
FIRST_MINUTE, EARLY_OFFSETS, LATE_FROM = 60.0, (1.0, 55.0), 62.0
BEFORE_EXPIRY = 15.0  # late payments and failures happen at least this long before expiry


def mix_counts(n: int, shares: Sequence[float]) -> list[int]:
    """Shares of n as whole payments that add up to n (largest remainders)."""
    counts = [math.floor(n * s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: n * shares[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


class Side:
    """One way of learning that payments ended, and what it learnt."""

    label = "?"

    def __init__(self, name: str, expiration: int | None) -> None:
        self.name, self.expiration = name, expiration
        self.ids: dict[int, str] = {}  # plan index -> payment id
        self.classes: dict[str, str] = {}  # payment id -> its class (CLASSES)
        self.created_at: dict[str, float] = {}
        self.acted_at: dict[str, float] = {}  # when the settle/fail call answered
        self.expires_at: dict[str, float] = {}  # the simulator's expiry instant
        self.reported: dict[str, float] = {}  # the subscriber knows (headline)
        self.reported_status: dict[str, str] = {}
        self.detected: dict[str, float] = {}  # the watcher knows (outbox)
        self.detected_status: dict[str, str] = {}
        self.events: Counter[str] = Counter()  # outbox events per payment
        self.double_reported: dict[str, int] = {}  # distinct webhook-ids
        self.act_failed: set[str] = set()
        self.redeliveries = self.create_errors = self.create_requests = self.create_posts = 0
        self.phase, self.started, self.ended = "", 0.0, 0.0

    def create(self, index: int) -> str:
        raise NotImplementedError

    def finish_creates(self) -> None:
        """Note how many requests the creates took (once they are all done)."""

    def after_act(self, action: str, payment: dict[str, Any]) -> None:
        """Right after a settle/fail call answered (the hint side tells the watcher)."""

    def refresh(self) -> None:
        """Pick up detections and deliveries (the naive loop records its own as it goes)."""

    def close(self) -> None:
        """Stop what the side runs in this process (idempotent)."""

    def want(self, pid: str) -> str | None:
        """The final status the payment must reach (None: it must not be reported)."""
        return CLASSES[self.classes[pid]][1]

    def checked(self) -> list[str]:
        """Payments whose outcome is checked: all but those whose settle/fail call failed."""
        return [pid for pid in self.classes if pid not in self.act_failed]

    def undetected(self) -> list[str]:
        return [p for p in self.checked() if self.want(p) and p not in self.reported]

    def wrong(self) -> list[str]:
        return [p for p in self.checked() if p in self.reported and self.want(p)
                and self.reported_status.get(p) != self.want(p)]  # fmt: skip

    def unexpected(self) -> list[str]:
        return [p for p in self.checked()
                if not self.want(p) and (p in self.reported or p in self.detected)]  # fmt: skip

    def duplicates(self) -> list[str]:
        """Reported twice without saying so: two outbox events, or two distinct webhook-ids."""
        return sorted({p for p, n in self.events.items() if n > 1} | set(self.double_reported))

    def problems(self) -> int:
        found = (self.undetected(), self.wrong(), self.unexpected(), self.duplicates())
        return sum(len(x) for x in found)


class WatcherSide(Side):
    """A watcher deployment (own Redis db, wallet, receiver path): reported = the first verified
    webhook at the receiver, detected = the outbox event's XADD time."""

    label = "watcher"

    def __init__(self, stack: Stack, a: Any, name: str, db: int, receiver: Receiver) -> None:
        super().__init__(name, a.expiration)
        self.path, self.suffix, self.receiver = f"/hooks/{name}", f"-{name}" if db else "", receiver
        given = {k: getattr(a, k) for k in ("poll_schedule", "sweep_interval", "dispatch_interval")}
        extra = {f"WATCHER_{k.upper()}": v for k, v in given.items() if v is not None}
        if name == "hint":
            extra |= {"VOLTAGE_WEBHOOK_SECRET": HINT_SECRET, "WATCHER_API_TOKENS": API_TOKEN}
        url, wallet = h.db_url(stack.redis.url, db), WALLETS[name]
        self.values = stack.values(wallet, url, WATCHER_WEBHOOK_ALLOW_PRIVATE="true", **extra)
        self.rt = stack.runtime(self.values, own_process=not db)
        _sub, secret = self.rt.subscriptions.create(
            url=receiver.url(self.path), wallet_id=wallet, description=f"bench {name}"
        )
        receiver.add_path(self.path, secret)
        self.invalid: Counter[str] = Counter()
        self.posts, self._last_entry = 0, "-"
        self._requests_before = self.rt.voltage.request_count

    def start(self, stack: Stack, a: Any) -> None:
        """The Procfile's worker and beat; a second deployment on this host gets its own node."""
        args = ["--loglevel", "INFO"]
        args += ["--concurrency", str(a.worker_concurrency)] if a.worker_concurrency else []
        args += ["-n", f"bench{self.suffix}@%h"] if self.suffix else []
        stack.worker(f"worker{self.suffix}", self.values, *args, rt=self.rt)
        stack.beat(f"beat{self.suffix}", self.values, rt=self.rt)

    def create(self, index: int) -> str:
        meta = {"bench": self.name, "i": str(index)}
        return create_and_watch(self.rt, amount_msats=1_000 + index, metadata=meta,
                                description=f"bench {self.name} {index}",
                                expiration=self.expiration).record.id  # fmt: skip

    def finish_creates(self) -> None:
        self.create_requests = self.rt.voltage.request_count - self._requests_before

    def refresh(self) -> None:
        ids, store = set(self.ids.values()), self.rt.payments
        while entries := store.redis.xrange(
            store.keys.outbox, min="-" if self._last_entry == "-" else f"({self._last_entry}",
            count=500,
        ):  # fmt: skip
            for entry_id, fields in entries:
                self._last_entry, pid = entry_id, fields.get("payment_id", "")
                if pid in ids:
                    self.events[pid] += 1
                if pid in ids and pid not in self.detected:
                    self.detected[pid] = int(entry_id.split("-")[0]) / 1000.0
                    self.detected_status[pid] = fields.get("type", "").removeprefix("payment.")
        inbox = self.receiver.snapshot(self.path)
        for pid, at in inbox.arrived.items():
            if pid in ids and pid not in self.reported:
                self.reported[pid], self.reported_status[pid] = at, inbox.status[pid]
        self.double_reported = {p: n for p, n in inbox.double_reports().items() if p in ids}
        self.redeliveries, self.invalid, self.posts = inbox.redeliveries, inbox.invalid, inbox.posts


class HintSide(WatcherSide):
    """A watcher whose `watcher api` gets Voltage's signed webhook right after each settle/fail."""

    label = "watcher+hint"

    def start(self, stack: Stack, a: Any) -> None:
        from watcher.redis_server import free_port

        super().start(stack, a)
        port, self.sessions, self._lock = free_port(), h.Sessions(), threading.Lock()
        self.url = f"http://127.0.0.1:{port}/v1{ingress.INGRESS_ROUTE}"
        self.answers: Counter[str] = Counter()  # accepted | ignored: <reason> | HTTP n | error
        self.post_ms: list[float] = []
        command = watcher_command("api", "--host", "127.0.0.1", "--port", str(port))
        api = stack.spawn(f"api{self.suffix}", command, self.values)
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_ready("the hint API", lambda: stack.http.get(ready, timeout=1).ok, 60, [api])

    def close(self) -> None:
        if hasattr(self, "sessions"):
            self.sessions.close()

    def after_act(self, action: str, payment: dict[str, Any]) -> None:
        event = {"settle": "completed", "fail": "failed"}[action]
        body = {"type": "receive", "detail": {"event": event, "data": payment}}
        raw, stamp = json.dumps(body, separators=(",", ":")).encode(), str(int(time.time()))
        signature = ingress.sign_voltage_webhook(HINT_SECRET, raw, stamp)
        headers = {"content-type": "application/json", ingress.HEADER_TIMESTAMP: stamp,
                   ingress.HEADER_SIGNATURE: signature, "x-voltage-event": f"receive.{event}",
                   "x-voltage-webhook-id": str(uuid.uuid4())}  # fmt: skip
        began, answer = time.perf_counter(), {}
        try:
            response = self.sessions.get().post(self.url, data=raw, headers=headers, timeout=10)
        except requests.RequestException as exc:
            with self._lock:
                self.answers[f"error: {type(exc).__name__}"] += 1
            return
        with contextlib.suppress(ValueError):
            answer = response.json()
        outcome = f"HTTP {response.status_code}"
        if response.status_code == 202:
            ok = answer.get("status") == "accepted"
            outcome = "accepted" if ok else f"ignored: {answer.get('reason')}"
        with self._lock:
            self.post_ms.append((time.perf_counter() - began) * 1000)
            self.answers[outcome] += 1


class NaiveSide(Side):
    """A plain VoltageClient and a loop GETting every pending payment: its first final GET is
    both reported and detected."""

    label = "naive"

    def __init__(self, a: Any, stack: Stack) -> None:
        super().__init__("naive", a.expiration)
        self.posts_seen, self._lock, session = 0, threading.Lock(), requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=2, pool_maxsize=32, max_retries=0))
        session.hooks["response"].append(self._count_response)
        self.client = VoltageClient(base_url=f"{stack.sim_root}/v1", api_key=API_KEY,
                                    organization_id=ORG_ID, environment_id=ENV_ID,
                                    session=session)  # fmt: skip
        self.loop = NaiveLoop(stack.payments_url, API_KEY, interval=a.naive_interval,
                              threads=a.naive_threads, on_final=self._final)  # fmt: skip

    def _count_response(self, response: requests.Response, *_args: Any, **_kw: Any) -> None:
        with self._lock:
            self.posts_seen += response.request.method == "POST"

    def _final(self, pid: str, status: str, seen: float) -> None:
        with self._lock:
            self.events[pid] += 1
            if pid not in self.reported:
                self.reported[pid] = self.detected[pid] = seen
                self.reported_status[pid] = self.detected_status[pid] = status

    def create(self, index: int) -> str:
        pid = self.client.submit_receive(
            wallet_id=WALLETS["naive"], amount_msats=1_000 + index, expiration=self.expiration,
            description=f"bench naive {index}", metadata={"bench": "naive", "i": str(index)},
        )  # fmt: skip
        self.client.wait_for_invoice(pid, timeout=10)
        self.loop.add(pid)
        return pid

    def finish_creates(self) -> None:
        self.create_requests, self.create_posts = self.client.request_count, self.posts_seen

    @property
    def requests_made(self) -> int:
        """Every Voltage request this side sent: creates (POST + invoice GETs) + loop GETs."""
        return self.client.request_count + self.loop.gets

    def close(self) -> None:
        if not self.loop.stopped:
            self.loop.stop()
        self.client.close()


def watchers(sides: Sequence[Any]) -> list[Any]:
    """The watcher deployments, told by name (the report reads their own attributes)."""
    return [s for s in sides if s.name != "naive"]


def list_shares(sides: list[Side], phases: dict[str, Any]) -> dict[str, float]:
    """GET /payments per side: a phase's, shared by the list pages (or sweeps) each counted."""
    shares = {side.name: 0.0 for side in sides}
    for label, phase in phases.items():
        mine = [s for s in watchers(sides) if s.phase == label]
        calls = int(phase["stats"].get("by_route", {}).get("GET /payments", 0))
        weights = []
        for side in mine:
            c = phase["counters"].get(side.name, {})
            pages = c.get("voltage_requests:sweep", 0) + c.get("voltage_requests:reconcile", 0)
            weights.append(max(0, pages or c.get("sweeps", 0)))
        for side, weight in zip(mine, weights, strict=True):
            shares[side.name] = calls * (weight / sum(weights) if sum(weights) else 1 / len(mine))
    return shares


def cost_of(side: Side, stats: dict[str, Any], list_calls: float) -> dict[str, float]:
    """From the simulator's stats: this side's GETs by id, its creates, its list calls."""
    gets = sum(stats.get("per_payment", {}).get(pid, 0) for pid in side.ids.values())
    watching = gets - (side.create_requests - side.create_posts) + list_calls
    minutes = sum(max(0.0, side.reported.get(p, side.ended) - c) / 60.0
                  for p, c in side.created_at.items())  # fmt: skip
    return {"total": round(gets + list_calls + side.create_posts), "gets": gets,
            "watching": round(watching), "list_calls": list_calls, "minutes": minutes}  # fmt: skip


def class_costs(side: Side, stats: dict[str, Any], list_calls: float) -> dict[str, Any]:
    """(payments, requests per payment) by class and "all": own GETs + shared creates, lists."""
    per_payment: dict[str, int] = stats.get("per_payment", {})
    overhead = (side.create_posts + list_calls) / max(1, len(side.ids))
    groups: dict[str, list[str]] = {name: [] for name in MIX_CLASSES}
    for pid in side.ids.values():
        groups.setdefault(side.classes.get(pid, "?"), []).append(pid)
    groups["all"] = list(side.ids.values())
    mean = {k: sum(per_payment.get(p, 0) for p in v) / max(1, len(v)) for k, v in groups.items()}
    return {k: (len(v), mean[k] + overhead if v else 0.0) for k, v in groups.items()}


def mean_pending(shares: tuple[float, ...], expiry: float) -> float:
    """Mean seconds from creation to the final status, by the mix plan's distributions."""
    early, late, expired, failed = shares
    return (early * sum(EARLY_OFFSETS) / 2 + late * (LATE_FROM + expiry - BEFORE_EXPIRY) / 2
            + expired * expiry + failed * (1.0 + expiry - BEFORE_EXPIRY) / 2)  # fmt: skip
