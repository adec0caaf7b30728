"""The subscriber the detection bench measures at: a real HTTP receiver on loopback.

Detection is only worth something once the subscriber has it, so the headline latency is taken
here, not from the watcher's Redis. Every POST is verified with the `standardwebhooks` package
(the reference implementation, not the watcher's own signing code) against the secret of the
subscription its path belongs to; only a verified webhook counts. For each (payment id, event
type) the first verified arrival is kept. A repeat with the same `webhook-id` is an at-least-once
redelivery the receiver can dedupe (counted, not a problem); a second *distinct* `webhook-id`
for the same payment and type is the watcher reporting it twice (a problem).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Inbox:
    """What one subscription's path received."""

    secret: str
    arrived: dict[str, float] = field(default_factory=dict)  # pid -> first verified arrival
    status: dict[str, str] = field(default_factory=dict)  # pid -> status of that first event
    msg_ids: dict[str, set[str]] = field(default_factory=dict)  # pid -> distinct webhook-ids
    types: dict[str, Counter[str]] = field(default_factory=dict)  # pid -> event types seen
    redeliveries: int = 0  # the same webhook-id again: at least once, and it says so
    posts: int = 0
    invalid: Counter[str] = field(default_factory=Counter)  # why a POST did not verify
    seen_msg_ids: set[str] = field(default_factory=set, repr=False)

    def copy(self) -> Inbox:
        return Inbox(
            self.secret,
            dict(self.arrived),
            dict(self.status),
            {pid: set(ids) for pid, ids in self.msg_ids.items()},
            {pid: Counter(kinds) for pid, kinds in self.types.items()},
            self.redeliveries,
            self.posts,
            Counter(self.invalid),
        )

    def double_reports(self) -> dict[str, int]:
        """Payments told more than once under different webhook-ids: reported twice."""
        return {pid: len(ids) for pid, ids in self.msg_ids.items() if len(ids) > 1}


class WebhookReceiver:
    """A `ThreadingHTTPServer` on 127.0.0.1 that verifies and records; one Inbox per path."""

    def __init__(self) -> None:
        self.inboxes: dict[str, Inbox] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add_path(self, path: str, secret: str) -> Inbox:
        with self._lock:
            self.inboxes[path] = Inbox(secret)
            return self.inboxes[path]

    def snapshot(self, path: str) -> Inbox:
        """A consistent copy of one path's inbox (the handler threads keep writing)."""
        with self._lock:
            return self.inboxes[path].copy()

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits forever for a loop that never ran
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.receive(self.path, headers, body, arrived)
                payload = b"ok" if status == 200 else b"rejected"
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def receive(self, path: str, headers: dict[str, str], body: bytes, arrived: float) -> int:
        """Verify, then record; the answer's status code (401 for a bad signature)."""
        with self._lock:
            inbox = self.inboxes.get(path)
        if inbox is None:
            return 404
        try:
            event: Any = Webhook(inbox.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            with self._lock:
                inbox.posts += 1
                inbox.invalid[str(exc)[:60]] += 1
            return 401
        data = event.get("data") if isinstance(event, dict) else None
        pid = str(data.get("payment_id", "")) if isinstance(data, dict) else ""
        kind = str(event.get("type", "")) if isinstance(event, dict) else ""
        msg_id = headers.get("webhook-id", "")
        with self._lock:
            inbox.posts += 1
            if msg_id in inbox.seen_msg_ids:
                inbox.redeliveries += 1
                return 200
            inbox.seen_msg_ids.add(msg_id)
            inbox.msg_ids.setdefault(pid, set()).add(msg_id)
            inbox.types.setdefault(pid, Counter())[kind] += 1
            if pid not in inbox.arrived:
                inbox.arrived[pid] = arrived
                inbox.status[pid] = kind.removeprefix("payment.")
        return 200
