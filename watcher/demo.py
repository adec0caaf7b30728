"""`watcher demo`: the whole watcher, end to end, against the SIMULATED Voltage API.

Everything runs on free loopback ports in a temporary directory: an embedded Redis, the
Voltage simulator, the HTTP API, a Celery worker and beat (via `watcher.supervisor`), plus a
small webhook receiver in this process that verifies every signature. The demo then talks to
the watcher only through its HTTP API (and to the simulator's `/_sim` control surface to "pay"):
subscribe the receiver, create a payment, pay it, watch the signed webhook arrive; then one
payment that expires and one that fails. It exits 0 only if each of the three events arrived
exactly once (a re-delivery with the same webhook-id is fine: delivery is at least once) and
verified. Everything is stopped and the directory removed at the end, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import requests

from watcher.delivery.signing import WebhookVerificationError, verify_and_parse
from watcher.logging import configure_logging
from watcher.redis_server import free_port
from watcher.settings import ConfigError, load_settings
from watcher.supervisor import Supervisor, UpOptions

DEFAULT_TIMEOUT = 45.0
EVENT_TYPES = ("payment.completed", "payment.expired", "payment.failed")
# After the last expected webhook, how long to keep listening for late extras or duplicates.
GRACE_SECONDS = 1.5
MAX_BODY_BYTES = 1024 * 1024
DISPATCH_INTERVAL = "0.3"
LOG_TAIL_LINES = 25


class DemoError(Exception):
    """Something the demo needed did not happen; the message says what."""


# --- the verdict: a pure function over what the receiver got ---------------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST the demo receiver got."""

    webhook_id: str
    verified: bool
    event_type: str | None = None
    payment_id: str | None = None
    error: str | None = None
    at: float = 0.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    # (event type, payment id) expected but not received verified
    missing: tuple[tuple[str, str], ...] = ()
    # webhook-ids delivered more than once (allowed: delivery is at least once)
    duplicates: tuple[str, ...] = ()
    # everything else that makes the run a failure, for a person to read
    problems: tuple[str, ...] = ()


def check_deliveries(expected: Mapping[str, str], deliveries: Sequence[Delivery]) -> Verdict:
    """Did every expected event (payment id -> event type) arrive exactly once, verified?

    Deliveries are deduplicated by webhook-id: the same webhook-id twice is a re-delivery,
    reported but allowed. A delivery that failed verification, a webhook-id reused for a
    different event, an event for a payment or of a type nobody expected, and a second
    *distinct* event for one payment are failures; so is every expected event that is missing.
    """
    problems: list[str] = []
    distinct: dict[str, Delivery] = {}
    counts: dict[str, int] = {}
    for delivery in deliveries:
        if not delivery.verified:
            problems.append(
                f"a webhook failed verification (webhook-id {delivery.webhook_id or '?'}): "
                f"{delivery.error or 'unknown reason'}"
            )
            continue
        counts[delivery.webhook_id] = counts.get(delivery.webhook_id, 0) + 1
        first = distinct.setdefault(delivery.webhook_id, delivery)
        if (first.event_type, first.payment_id) != (delivery.event_type, delivery.payment_id):
            problems.append(
                f"webhook-id {delivery.webhook_id} carried two different events: "
                f"{first.event_type} for {first.payment_id} and "
                f"{delivery.event_type} for {delivery.payment_id}"
            )
    duplicates = tuple(webhook_id for webhook_id, n in counts.items() if n > 1)

    by_payment: dict[str, list[Delivery]] = {}
    for delivery in distinct.values():
        payment_id = delivery.payment_id or "?"
        if payment_id not in expected:
            problems.append(
                f"unexpected {delivery.event_type} for payment {payment_id} "
                f"(webhook-id {delivery.webhook_id})"
            )
            continue
        by_payment.setdefault(payment_id, []).append(delivery)

    missing: list[tuple[str, str]] = []
    for payment_id, event_type in expected.items():
        got = by_payment.get(payment_id, [])
        if len(got) > 1:
            problems.append(
                f"payment {payment_id} got {len(got)} distinct events, expected one: "
                + ", ".join(f"{d.event_type} ({d.webhook_id})" for d in got)
            )
        for delivery in got:
            if delivery.event_type != event_type:
                problems.append(
                    f"payment {payment_id} got {delivery.event_type}, expected {event_type} "
                    f"(webhook-id {delivery.webhook_id})"
                )
        if not any(d.event_type == event_type for d in got):
            missing.append((event_type, payment_id))

    ok = not problems and not missing
    return Verdict(ok=ok, missing=tuple(missing), duplicates=duplicates, problems=tuple(problems))


# --- the webhook receiver -----------------------------------------------------------------------


class DemoReceiver:
    """A webhook endpoint on loopback that verifies each request and queues what it got."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.deliveries: list[Delivery] = []
        self.arrivals: queue.Queue[Delivery] = queue.Queue()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("content-length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY_BYTES:
                    self._answer(413)
                    return
                body = self.rfile.read(length)
                self._answer(receiver.receive(dict(self.headers.items()), body))

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

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

    def start(self) -> DemoReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


# --- output -------------------------------------------------------------------------------------


class Console:
    """Short, friendly lines on stdout; plain ASCII when the terminal cannot show symbols."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            "✓✗".encode(encoding)
            self.fancy = True
        except (UnicodeEncodeError, LookupError):
            self.fancy = False

    @property
    def tick(self) -> str:
        return "✓" if self.fancy else "OK"

    @property
    def cross(self) -> str:
        return "✗" if self.fancy else "X"

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def step(self, number: int, total: int, text: str) -> None:
        self.say(f"\n[{number}/{total}] {text}")

    def detail(self, text: str) -> None:
        self.say(f"      {text}")

    @property
    def is_tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def qr(self, text: str) -> None:
        """A QR code of `text`, only on a terminal (never into a pipe or a file)."""
        if not self.is_tty:
            return
        try:
            import segno
        except ImportError:  # pragma: no cover - segno is a dependency
            return
        segno.make_qr(text, error="l").terminal(out=self.stream, compact=True)
        self.stream.flush()


# --- talking to the watcher and the simulator ------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class Stack:
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


# --- running it ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _fds_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr (fds 1 and 2) at `path` for a moment.

    The supervisor starts its children with inherited stdout/stderr; while they are started,
    those go to the log file, so Celery banners and process logs do not drown the demo.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def _child_env(base: Mapping[str, str], data_dir: Path, token: str) -> dict[str, str]:
    """The children's environment: the caller's, minus any WATCHER_/VOLTAGE_ setting."""
    env = {k: v for k, v in base.items() if not k.upper().startswith(("WATCHER_", "VOLTAGE_"))}
    env.update(
        WATCHER_DATA_DIR=str(data_dir),
        WATCHER_API_TOKENS=token,
        WATCHER_WEBHOOK_ALLOW_PRIVATE="true",
        WATCHER_DISPATCH_INTERVAL=DISPATCH_INTERVAL,
        WATCHER_LOG_LEVEL="WARNING",
        WATCHER_LOG_FORMAT="json",
    )
    for name in ("NO_PROXY", "no_proxy"):
        parts = [p for p in env.get(name, "").split(",") if p.strip()]
        env[name] = ",".join([*parts, "127.0.0.1", "localhost"])
    return env


def _dead_child(supervisor: Supervisor) -> str | None:
    for child in supervisor.children:
        if not child.alive:
            code = child.process.returncode if child.process is not None else None
            return f"the {child.name} process exited (code {code})"
    return None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


@dataclass
class _Run:
    console: Console
    receiver: DemoReceiver
    expected: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)  # payment ids with their verified event
    acted_at: dict[str, float] = field(default_factory=dict)

    def show(self, delivery: Delivery) -> None:
        c = self.console
        if not delivery.verified:
            c.detail(
                f"{c.cross} webhook {delivery.webhook_id or '?'} FAILED verification: "
                f"{delivery.error}"
            )
            return
        if delivery.webhook_id in self.seen:
            c.detail(
                f"  (re-delivery of {delivery.webhook_id}: same webhook-id, "
                "a receiver dedupes it; fine)"
            )
            return
        self.seen.add(delivery.webhook_id)
        payment_id = delivery.payment_id or "?"
        after = ""
        if payment_id in self.acted_at:
            after = f"  ({delivery.at - self.acted_at[payment_id]:.1f} s)"
        if payment_id in self.expected:
            self.done.add(payment_id)
        c.detail(
            f"{c.tick} webhook {delivery.event_type}  payment {payment_id}{after}\n"
            f"        webhook-id {delivery.webhook_id}  signature verified {c.tick}"
        )

    def collect(
        self, wanted: set[str], deadline: Deadline, alive: Callable[[], str | None]
    ) -> None:
        """Print webhooks as they arrive until each wanted payment has one, or time is up."""
        while not wanted <= self.done:
            remaining = deadline.remaining()
            if remaining <= 0:
                return
            try:
                delivery = self.receiver.arrivals.get(timeout=min(0.25, remaining))
            except queue.Empty:
                dead = alive()
                if dead:
                    raise DemoError(dead) from None
                continue
            self.show(delivery)

    def linger(self, seconds: float) -> None:
        """Keep listening a moment for late duplicates or extra events."""
        end = time.monotonic() + seconds
        while (remaining := end - time.monotonic()) > 0:
            try:
                self.show(self.receiver.arrivals.get(timeout=remaining))
            except queue.Empty:
                return


def _report(run: _Run, verdict: Verdict, *, finished: bool = True) -> None:
    c = run.console
    for webhook_id in verdict.duplicates:
        c.detail(f"note: {webhook_id} was delivered more than once (same webhook-id: allowed)")
    if verdict.ok and finished:
        c.detail(
            f"{c.tick} all {len(run.expected)} events arrived exactly once, each signature verified"
        )
        return
    for event_type, payment_id in verdict.missing:
        c.detail(f"{c.cross} missing: {event_type} for payment {payment_id}")
    for problem in verdict.problems:
        c.detail(f"{c.cross} {problem}")


class _Demo:
    """One run: the stack, the receiver, the payments, and how to take it all down again."""

    def __init__(self, timeout: float, keep: bool) -> None:
        self.console = Console()
        self.deadline = Deadline(timeout)
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="watcher-demo-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "processes.log"
        self.token = secrets.token_urlsafe(24)
        self.receiver = DemoReceiver()
        self.run = _Run(self.console, self.receiver)
        self.supervisor: Supervisor | None = None
        self._stack: Stack | None = None

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            raise DemoError("the stack is not running")
        return self._stack

    def alive(self) -> str | None:
        return _dead_child(self.supervisor) if self.supervisor is not None else None

    def start(self) -> None:
        c = self.console
        c.step(1, 5, "Starting Redis, the Voltage simulator, the API, a worker and beat")
        settings = load_settings(
            _env_file=None,
            watcher_data_dir=self.data_dir,
            watcher_redis_url=None,
            watcher_api_tokens=[self.token],
            watcher_webhook_allow_private=True,
            watcher_dispatch_interval=float(DISPATCH_INTERVAL),
            watcher_log_level="WARNING",
            voltage_organization_id="demo-org",
            voltage_environment_id="demo-env",
            voltage_wallet_id="demo-wallet",
        )
        configure_logging(settings)
        options = UpOptions(
            api_port=free_port(), simulate=True, simulator_port=free_port(), flower_port=None
        )
        self.supervisor = Supervisor(settings, options)
        self.supervisor.env = _child_env(self.supervisor.env, self.data_dir, self.token)
        started = time.monotonic()
        # A Ctrl-C in the middle of start() would leave a half-started supervisor behind (its
        # embedded Redis is only recorded once it answers), so the interrupt waits for start().
        with _interrupts_deferred(), _fds_to(self.log_path):
            self.supervisor.start()
        self._stack = Stack(
            api_url=f"http://127.0.0.1:{options.api_port}",
            simulator_url=f"http://127.0.0.1:{options.simulator_port}",
            token=self.token,
            deadline=self.deadline,
        )
        self._stack.wait_ready(self.alive)
        c.detail(
            f"ready in {time.monotonic() - started:.1f} s: API {self.stack.api_url}, "
            f"simulated Voltage {self.stack.simulator_url}/v1"
        )
        c.detail(f"temporary data dir {self.tmp}")

    def subscribe(self) -> None:
        c = self.console
        c.step(2, 5, "Subscribing a local webhook receiver (over the HTTP API)")
        self.receiver.start()
        subscription = self.stack.api_json(
            "POST",
            "/v1/subscriptions",
            {
                "url": self.receiver.url,
                "event_types": list(EVENT_TYPES),
                "description": "watcher demo receiver",
            },
            ok=(201,),
        )
        self.receiver.secret = str(subscription["secret"])
        c.detail(f"{self.receiver.url} -> subscription {subscription['id']}")
        c.detail("signing secret received (shown once; the receiver verifies with it)")

    def pay_one(self) -> None:
        c, stack, run = self.console, self.stack, self.run
        c.step(3, 5, "Creating a payment of 21 sats: POST /v1/payments")
        payment = stack.create_payment(21_000, "watcher demo: a coffee")
        payment_id = str(payment["id"])
        run.expected[payment_id] = "payment.completed"
        c.detail(f"payment {payment_id}, status {payment['status']}")
        c.detail("BOLT11 (a signet test invoice from the simulator; no real wallet pays it):")
        c.say(str(payment["payment_request"]))
        c.qr(f"lightning:{payment['payment_request']}".upper())

        c.step(4, 5, "Paying it in the simulator and waiting for the webhook")
        run.acted_at[payment_id] = time.monotonic()
        stack.simulate(payment_id, "settle")
        c.detail(f"POST /_sim/payments/{payment_id}/settle")
        run.collect({payment_id}, self.deadline, self.alive)
        if payment_id not in run.done:
            raise DemoError("no payment.completed webhook in time")

    def expire_and_fail(self) -> None:
        c, stack, run = self.console, self.stack, self.run
        c.step(5, 5, "Two more payments: one expires, one fails")
        expiring = str(stack.create_payment(5_000, "watcher demo: never paid")["id"])
        failing = str(stack.create_payment(7_000, "watcher demo: routing fails")["id"])
        run.expected[expiring] = "payment.expired"
        run.expected[failing] = "payment.failed"
        run.acted_at[expiring] = time.monotonic()
        stack.simulate(expiring, "expire")
        c.detail(f"payment {expiring}: let it expire  (POST /_sim/payments/<id>/expire)")
        run.acted_at[failing] = time.monotonic()
        stack.simulate(failing, "fail")
        c.detail(f"payment {failing}: make it fail   (POST /_sim/payments/<id>/fail)")
        run.collect({expiring, failing}, self.deadline, self.alive)
        run.linger(min(GRACE_SECONDS, max(0.0, self.deadline.remaining())))

    def verdict(self, *, finished: bool = True) -> Verdict:
        verdict = check_deliveries(self.run.expected, self.receiver.snapshot())
        if self.run.expected:
            _report(self.run, verdict, finished=finished)
        return verdict

    def stop(self, code: int) -> None:
        """Everything down, the directory gone (unless --keep); safe after any failure."""
        with _signals_ignored():
            self.console.say("\nStopping everything...")
            self.receiver.stop()
            if self.supervisor is not None:
                with _fds_to(self.log_path):
                    self.supervisor.stop(timeout=10.0)
            if code not in (0, 130):
                tail = _tail(self.log_path, LOG_TAIL_LINES)
                if tail:
                    shown = [line if len(line) <= 240 else line[:240] + "..." for line in tail]
                    print("last lines of the process log:", *shown, sep="\n", file=sys.stderr)
                if not self.keep:
                    self.console.say("(run it with --keep to keep the data dir and process logs)")
            if self.keep:
                self.console.say(f"kept {self.tmp} (Redis data; process logs in processes.log)")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)


def run_demo(*, timeout: float = DEFAULT_TIMEOUT, keep: bool = False) -> int:
    """Run the demo; 0 if every expected webhook arrived exactly once and verified, else 1.

    `timeout` bounds everything up to the verdict (start-up included); stopping is extra.
    `keep` keeps the temporary directory (Redis data, process logs) and prints its path.
    Ctrl-C (or SIGTERM) stops everything and returns 130.
    """
    restore = _raise_on_sigterm()
    demo: _Demo | None = None
    code = 1
    try:
        demo = _Demo(timeout, keep)
        c = demo.console
        c.say(
            "voltage-watcher demo: against the SIMULATED Voltage API "
            "(a local stand-in: no Voltage account, no real payments)"
        )
        demo.start()
        demo.subscribe()
        demo.pay_one()
        demo.expire_and_fail()
        c.say("\nChecking: each event exactly once (deduped by webhook-id), verified")
        code = 0 if demo.verdict().ok else 1
    except KeyboardInterrupt:
        print("\nInterrupted.", flush=True)
        code = 130
    except (DemoError, ConfigError) as exc:
        cross = demo.console.cross if demo is not None else "X"
        print(f"\n{cross} demo failed: {exc}", flush=True)
        if demo is not None:
            demo.verdict(finished=False)
        code = 1
    finally:
        if demo is not None:
            demo.stop(code)
        restore()
    if code == 0 and demo is not None:
        c = demo.console
        c.say(f"Done {c.tick}  (`watcher up --simulate` keeps such a stack running)")
    return code


# --- signals ------------------------------------------------------------------------------------


def _raise_on_sigterm() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C (so `finally` cleans up); returns what restores the old one."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    return restore


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM until the block is done, then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in saved.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, remember)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not leave children (in their own sessions) behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in saved:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
