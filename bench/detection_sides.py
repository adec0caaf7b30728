"""The sides of the detection bench: how each creates payments and learns that they ended.

* watcher: `create_and_watch` on the bench's Runtime; *reported* = the first verified webhook at
  the bench's receiver, *detected* = the XADD time of the outbox event (secondary).
* hint: the same, plus the signed webhook Voltage would send, right after each settle/fail.
* naive: a plain `VoltageClient` creates; the 2 s loop's first final GET is both.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bench.detection_plan import EXPECTED
from bench.detection_stack import API_KEY, ENV_ID, HINT_SECRET, NAIVE_WALLET, ORG_ID
from bench.naive import NaiveLoop
from bench.receiver import WebhookReceiver
from watcher.api.ingress import HEADER_SIGNATURE, HEADER_TIMESTAMP, INGRESS_ROUTE, sign
from watcher.engine.watching import create_and_watch
from watcher.runtime import Runtime
from watcher.voltage.client import VoltageClient

SIDE_LABELS = {"watcher": "watcher", "hint": "watcher+hint", "naive": "naive"}


@dataclass
class Side:
    name: str
    n: int
    expiration: int | None = None
    ids: dict[int, str] = field(default_factory=dict)  # plan index -> payment id
    created_at: dict[str, float] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)  # payment id -> plan class
    expected: dict[str, str | None] = field(default_factory=dict)  # final status it must reach
    actions: dict[str, str] = field(default_factory=dict)  # payment id -> settle|fail
    acted_at: dict[str, float] = field(default_factory=dict)  # when the settle/fail answered
    act_failed: set[str] = field(default_factory=set)
    expires_at: dict[str, float] = field(default_factory=dict)  # the simulator's expiry instant
    reported: dict[str, float] = field(default_factory=dict)  # the subscriber knows (headline)
    reported_status: dict[str, str] = field(default_factory=dict)
    detected: dict[str, float] = field(default_factory=dict)  # the watcher knows (outbox)
    detected_status: dict[str, str] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)  # outbox events per payment
    double_reported: dict[str, int] = field(default_factory=dict)  # distinct webhook-ids
    redeliveries: int = 0  # same webhook-id again (at least once, and it says so)
    create_errors: int = 0
    create_requests: int = 0  # every request the creating client sent (POST + GETs)
    create_posts: int = 0
    phase: str = ""
    started: float = 0.0
    ended: float = 0.0

    @property
    def label(self) -> str:
        return SIDE_LABELS.get(self.name, self.name)

    def create(self, index: int) -> str:
        raise NotImplementedError

    def finish_creates(self) -> None:
        """Note how many requests the creates took (called once they are all done)."""

    def after_act(self, pid: str, action: str, payment: dict[str, Any]) -> None:
        """Called right after a settle/fail call answered (the hint side tells the watcher)."""

    def refresh(self) -> None:
        """Pick up detections and deliveries (the naive loop records its own as it goes)."""

    @property
    def all_ids(self) -> set[str]:
        return set(self.ids.values())

    def checked(self) -> list[str]:
        """Payments whose outcome is checked: all but those whose settle/fail call failed."""
        return [pid for pid in self.expected if pid not in self.act_failed]

    def undetected(self) -> list[str]:
        return [
            pid
            for pid in self.checked()
            if self.expected[pid] is not None and pid not in self.reported
        ]

    def wrong(self) -> list[str]:
        return [
            pid
            for pid in self.checked()
            if pid in self.reported
            and self.expected[pid] is not None
            and self.reported_status.get(pid) != self.expected[pid]
        ]

    def unexpected(self) -> list[str]:
        """Reported final although nothing happened to them (latency plan: untouched)."""
        return [
            pid
            for pid in self.checked()
            if not self.expected[pid] and (pid in self.reported or pid in self.detected)
        ]

    def duplicates(self) -> list[str]:
        """Reported twice without saying so: two outbox events, or two distinct webhook-ids."""
        twice = {pid for pid, count in self.events.items() if count > 1}
        return sorted(twice | set(self.double_reported))

    def problems(self) -> int:
        return (
            len(self.undetected())
            + len(self.wrong())
            + len(self.unexpected())
            + len(self.duplicates())
        )


class WatcherSide(Side):
    def __init__(
        self,
        n: int,
        rt: Runtime,
        receiver: WebhookReceiver,
        path: str,
        expiration: int | None = None,
        name: str = "watcher",
    ) -> None:
        super().__init__(name, n, expiration)
        self.rt = rt
        self.receiver = receiver
        self.path = path
        self.invalid: Counter[str] = Counter()
        self.posts = 0
        self._last_entry = "-"
        self._requests_before = rt.voltage.request_count

    def create(self, index: int) -> str:
        result = create_and_watch(
            self.rt,
            amount_msats=1_000 + index,
            description=f"bench {self.name} {index}",
            expiration=self.expiration,
            metadata={"bench": self.name, "i": str(index)},
        )
        return result.record.id

    def finish_creates(self) -> None:
        self.create_requests = self.rt.voltage.request_count - self._requests_before

    def refresh(self) -> None:
        self._read_outbox()
        inbox = self.receiver.snapshot(self.path)
        ids = self.all_ids
        for pid, at in inbox.arrived.items():
            if pid in ids and pid not in self.reported:
                self.reported[pid] = at
                self.reported_status[pid] = inbox.status[pid]
        self.double_reported = {p: n for p, n in inbox.double_reports().items() if p in ids}
        self.redeliveries = inbox.redeliveries
        self.invalid = inbox.invalid
        self.posts = inbox.posts

    def _read_outbox(self) -> None:
        store = self.rt.store
        while True:
            low = "-" if self._last_entry == "-" else f"({self._last_entry}"
            entries: Any = store.redis.xrange(store.keys.outbox, min=low, count=500)
            if not entries:
                return
            ids = self.all_ids
            for entry_id, fields in entries:
                self._last_entry = entry_id
                pid = fields.get("payment_id", "")
                if pid not in ids:
                    continue
                self.events[pid] += 1
                if pid not in self.detected:
                    self.detected[pid] = int(entry_id.split("-")[0]) / 1000.0
                    self.detected_status[pid] = fields.get("type", "").removeprefix("payment.")


class HintSide(WatcherSide):
    """A watcher that also hears from "Voltage": a signed webhook right after each settle/fail."""

    def __init__(
        self,
        n: int,
        rt: Runtime,
        receiver: WebhookReceiver,
        path: str,
        api_url: str,
        expiration: int | None = None,
    ) -> None:
        super().__init__(n, rt, receiver, path, expiration, name="hint")
        self.url = api_url + "/v1" + INGRESS_ROUTE
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self.answers: Counter[str] = Counter()  # accepted | ignored: <reason> | HTTP n | error
        self.post_ms: list[float] = []

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def after_act(self, pid: str, action: str, payment: dict[str, Any]) -> None:
        event = EXPECTED[action]
        body = json.dumps(
            {"type": "receive", "detail": {"event": event, "data": payment}},
            separators=(",", ":"),
        ).encode()
        stamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            HEADER_SIGNATURE: sign(HINT_SECRET, body, stamp),
            HEADER_TIMESTAMP: stamp,
            "x-voltage-event": f"receive.{event}",
            "x-voltage-webhook-id": str(uuid.uuid4()),
        }
        began = time.perf_counter()
        try:
            response = self._session().post(self.url, data=body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            with self._lock:
                self.answers[f"error: {type(exc).__name__}"] += 1
            return
        answer: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            answer = response.json()
        if response.status_code != 202:
            outcome = f"HTTP {response.status_code}"
        elif answer.get("status") == "accepted":
            outcome = "accepted"
        else:
            outcome = f"ignored: {answer.get('reason')}"
        with self._lock:
            self.post_ms.append((time.perf_counter() - began) * 1000)
            self.answers[outcome] += 1

    def close(self) -> None:
        for session in self._sessions:
            session.close()


class NaiveSide(Side):
    """Creates with a plain VoltageClient; the 2 s loop GETs every pending payment."""

    def __init__(
        self,
        n: int,
        base_url: str,
        payments_url: str,
        interval: float,
        threads: int,
        expiration: int | None = None,
    ) -> None:
        super().__init__("naive", n, expiration)
        self.interval = interval
        self.posts_seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=32, max_retries=0)
        session.mount("http://", adapter)
        session.hooks["response"].append(self._count_response)
        self.client = VoltageClient(
            base_url=base_url,
            api_key=API_KEY,
            organization_id=ORG_ID,
            environment_id=ENV_ID,
            session=session,
        )
        self.loop = NaiveLoop(
            payments_url, API_KEY, interval=interval, threads=threads, on_final=self._final
        )

    def _count_response(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        with self._lock:
            self.posts_seen[response.request.method or "?"] += 1

    def _final(self, pid: str, status: str, seen: float) -> None:
        with self._lock:
            self.events[pid] += 1
            if pid not in self.reported:
                self.reported[pid] = self.detected[pid] = seen
                self.reported_status[pid] = self.detected_status[pid] = status

    def create(self, index: int) -> str:
        pid = self.client.submit_receive(
            wallet_id=NAIVE_WALLET,
            amount_msats=1_000 + index,
            description=f"bench naive {index}",
            expiration=self.expiration,
            metadata={"bench": "naive", "i": str(index)},
        )
        self.client.wait_for_invoice(pid, timeout=10)
        self.loop.add(pid)
        return pid

    def finish_creates(self) -> None:
        self.create_requests = self.client.request_count
        self.create_posts = self.posts_seen["POST"]

    @property
    def requests_made(self) -> int:
        """Every Voltage request this side sent: creates (POST + invoice GETs) + loop GETs."""
        return self.client.request_count + self.loop.gets

    def stop(self) -> None:
        if not self.loop.stopped:
            self.loop.stop()
        self.client.close()
