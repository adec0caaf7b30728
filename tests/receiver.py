"""A real webhook receiver on loopback whose answers a test scripts: status codes, hangs,
huge or endless bodies, slow drips, invalid UTF-8."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


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
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what it was answered (0 until decided)
    delay: float = 0.0  # how long the answer was held back


Policy = Callable[[Received], Answer]


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[Answer] = deque()
        self.default = Answer()
        # Decides the answer when the script is empty; `default` when not set.
        self.policy: Policy | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                got = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
                with receiver._lock:
                    if receiver.script:
                        answer = receiver.script.popleft()
                    elif receiver.policy is not None:
                        answer = receiver.policy(got)
                    else:
                        answer = receiver.default
                    got.status, got.delay = answer.status, answer.delay
                    receiver.received.append(got)
                if answer.delay and receiver._stop.wait(answer.delay):
                    return
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
                    while time.monotonic() < deadline and not receiver._stop.is_set():
                        piece = b"x" if answer.drip else b"y" * 65536
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        if answer.drip and receiver._stop.wait(answer.drip):
                            return
                except OSError:
                    return

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                """A client that hangs up mid-answer is what the hostile tests are about."""

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
