"""The subscriber the benches deliver to: a threaded HTTP receiver on loopback. A path with a
secret verifies each POST with `standardwebhooks` (not the watcher's signing code) and keeps each
payment's first arrival; a repeated `webhook-id` is a redelivery, a second distinct one a double
report. Other paths only count (`GET /count`). One write per answer: two would wait ~40 ms for
the client's delayed ACK."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Inbox:
    """What one path received."""

    secret: str | None
    arrived: dict[str, float] = field(default_factory=dict)  # pid -> first verified arrival
    status: dict[str, str] = field(default_factory=dict)  # pid -> status of that first event
    msg_ids: dict[str, set[str]] = field(default_factory=dict)  # pid -> distinct webhook-ids
    redeliveries: int = 0  # the same webhook-id again
    posts: int = 0
    invalid: Counter[str] = field(default_factory=Counter)  # why a POST did not verify
    seen: set[str] = field(default_factory=set, repr=False)  # every webhook-id
    first: float = 0.0
    sample: dict[str, Any] | None = None  # the first request's headers and body

    def copy(self) -> Inbox:
        return copy.deepcopy(self)

    def double_reports(self) -> dict[str, int]:
        """Payments told more than once under different webhook-ids."""
        return {pid: len(ids) for pid, ids in self.msg_ids.items() if len(ids) > 1}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    receiver: Receiver

    def log_message(self, format: str, *args: object) -> None:
        return

    def answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Rejected'}\r\n"
        head += f"content-type: {kind}\r\ncontent-length: {len(body)}\r\n\r\n"
        self.wfile.write(head.encode() + body)

    def do_POST(self) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = self.receiver.receive(self.path, headers, body, arrived)
        self.answer(status, b"ok" if status == 200 else b"rejected")

    def do_GET(self) -> None:
        with self.receiver._lock:
            counts = {p: {"total": i.posts, "distinct": len(i.seen), "first": i.first,
                          "sample": i.sample}
                      for p, i in self.receiver.inboxes.items()}  # fmt: skip
        self.answer(200, json.dumps(counts).encode(), "application/json")


class Receiver:
    """A `ThreadingHTTPServer` on 127.0.0.1 that records (and verifies) per path."""

    def __init__(self, port: int = 0) -> None:
        self.inboxes: dict[str, Inbox] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", port), type("H", (Handler,), {"receiver": self})
        )
        self._server.daemon_threads = True
        self._server.request_queue_size = 256  # C threads connecting at once
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def add_path(self, path: str, secret: str) -> None:
        with self._lock:
            self.inboxes[path] = Inbox(secret)

    def snapshot(self, path: str) -> Inbox:
        """A consistent copy of one path's inbox (the handler threads keep writing)."""
        with self._lock:
            return self.inboxes[path].copy()

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits forever for a loop that never ran
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

    def receive(self, path: str, headers: dict[str, str], body: bytes, arrived: float) -> int:
        """Record, verifying first on a path with a secret; the answer's status code."""
        msg_id = headers.get("webhook-id", "")
        with self._lock:
            inbox = self.inboxes.setdefault(path, Inbox(None))
            if inbox.sample is None:
                text = body.decode("utf-8", errors="replace")
                inbox.first, inbox.sample = arrived, {"headers": headers, "body": text}
            inbox.posts += 1
            if inbox.secret is None:
                inbox.seen.add(msg_id)
                return 200
        try:
            event: Any = Webhook(inbox.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            with self._lock:
                inbox.invalid[str(exc)[:60]] += 1
            return 401
        event = event if isinstance(event, dict) else {}
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        pid, kind = str(data.get("payment_id", "")), str(event.get("type", ""))
        with self._lock:
            if msg_id in inbox.seen:
                inbox.redeliveries += 1
                return 200
            inbox.seen.add(msg_id)
            inbox.msg_ids.setdefault(pid, set()).add(msg_id)
            if pid not in inbox.arrived:
                inbox.arrived[pid], inbox.status[pid] = arrived, kind.removeprefix("payment.")
        return 200


def serve(port: int) -> None:
    """The receiver as a process of its own (the delivery bench measures its CPU apart)."""
    Receiver(port)._server.serve_forever()
