"""A real webhook endpoint on loopback, for the demo and the tests.

`Receiver` records every POST and answers as scripted: status codes, hangs, huge or endless
bodies, slow drips, whatever a test needs a subscriber to do. `VerifyingReceiver` is the
subscriber the demo runs: it checks each signature with `watcher.delivery.signing` against the
subscription's secret and queues what arrived. (examples/receiver.py is the users' copy-paste
example, on purpose self-contained.)
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from watcher.delivery.signing import WebhookVerificationError, verify_and_parse
from watcher.lifecycle import Service

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hang, when long)
    stream_forever: bool = False  # a chunked body that never ends
    drip: float = 0.0  # seconds between single bytes of the body


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float
    status: int = 0  # what it was answered (0 until decided)
    delay: float = 0.0  # how long the answer was held back


Policy = Callable[[Received], Answer]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer is what the hostile tests are about."""


class Receiver(Service):
    """Answers from `script` first (in order), then from `policy`, else `default`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[Answer] = deque()
        self.default = Answer()
        # Decides the answer when the script is empty; `default` when not set.
        self.policy: Policy | None = None
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set by stop(): hangs and drips end
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *answers: Answer | int) -> None:
        with self._lock:
            for item in answers:
                self.script.append(item if isinstance(item, Answer) else Answer(status=item))

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.received]

    def respond(self, got: Received) -> Answer:
        """Record one POST and decide its answer (the handler thread holds it back for the
        answer's `delay` afterwards)."""
        with self._lock:
            if self.script:
                answer = self.script.popleft()
            elif self.policy is not None:
                answer = self.policy(got)
            else:
                answer = self.default
            got.status, got.delay = answer.status, answer.delay
            self.received.append(got)
        return answer

    def start(self, timeout: float = 10.0) -> Self:
        """Serve in the background (the socket is bound already: it accepts at once)."""
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (a hanging or dripping answer ends too); safe if never started."""
        self.stopping.set()
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    stopping = receiver.stopping

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("content-length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True  # the body is not read: the connection is spent
                self._send(Answer(status=413, body=b""))
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = receiver.respond(Received(self.path, headers, body, time.time()))
            if answer.delay and stopping.wait(answer.delay):
                return
            self._send(answer)

        def _send(self, answer: Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.stream_forever or answer.drip:
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self._stream(answer)
                return
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def _stream(self, answer: Answer) -> None:
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline and not stopping.is_set():
                    piece = b"x" if answer.drip else b"y" * 65536
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    if answer.drip and stopping.wait(answer.drip):
                        return
            except OSError:
                return

    return Handler


# --- verifying, for the demo ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST a VerifyingReceiver got."""

    webhook_id: str
    verified: bool
    event_type: str | None = None
    payment_id: str | None = None
    error: str | None = None
    at: float = 0.0


class VerifyingReceiver(Receiver):
    """Verifies each webhook with `secret` and queues what it got, verified or not."""

    def __init__(self) -> None:
        super().__init__()
        self.secret: str | None = None
        self.deliveries: list[Delivery] = []
        self.arrivals: queue.Queue[Delivery] = queue.Queue()

    def respond(self, got: Received) -> Answer:
        return Answer(status=self.receive(got.headers, got.body), body=b"")

    def receive(self, headers: Mapping[str, str], body: bytes) -> int:
        """Verify one webhook, record it, and return the HTTP status to answer with."""
        secret = self.secret
        if secret is None:
            return 503  # not subscribed yet: the watcher will retry
        lowered = {name.lower(): value for name, value in headers.items()}
        webhook_id = lowered.get("webhook-id", "")
        try:
            event = verify_and_parse(secret, lowered, body)
        except (WebhookVerificationError, ValueError, TypeError) as exc:
            delivery = Delivery(webhook_id, verified=False, error=str(exc), at=time.monotonic())
            status = 401
        else:
            data = event.get("data")
            payment_id = data.get("payment_id") if isinstance(data, dict) else None
            event_type = event.get("type")
            delivery = Delivery(
                webhook_id,
                verified=True,
                event_type=event_type if isinstance(event_type, str) else None,
                payment_id=payment_id if isinstance(payment_id, str) else None,
                at=time.monotonic(),
            )
            status = 204
        with self._lock:
            self.deliveries.append(delivery)
        self.arrivals.put(delivery)
        return status

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)
