"""`watcher demo`: the whole watcher, end to end, against the SIMULATED Voltage API.

Everything runs on free loopback ports in a temporary directory: an embedded Redis, the
Voltage simulator, the HTTP API, a Celery worker and beat (via `watcher.supervisor`), plus a
small webhook receiver in this process that verifies every signature. The demo then talks to
the watcher only through its HTTP API (and to the simulator's `/_sim` control surface to "pay"):
subscribe the receiver, create a payment, pay it, watch the signed webhook arrive; then one
payment that expires and one that fails. It exits 0 only if each of the three events arrived
exactly once (a re-delivery with the same webhook-id is fine: delivery is at least once) and
verified. Everything is stopped and the directory removed at the end, Ctrl-C included.

The steps are here; the HTTP calls in `demo_client`, what a person sees in `demo_console`, the
verdict in `demo_verdict`, the receiver in `watcher.receiver`.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from watcher.demo_client import Deadline, DemoClient, DemoError
from watcher.demo_console import Console, Progress, output_to
from watcher.demo_verdict import Verdict, check_deliveries
from watcher.interrupts import interrupts_deferred, raise_on_sigterm, signals_ignored
from watcher.launcher import clean_env, first_dead
from watcher.logging import configure_logging
from watcher.receiver import VerifyingReceiver as DemoReceiver
from watcher.redis_server import free_port
from watcher.settings import ConfigError, Settings, load_settings
from watcher.supervisor import Supervisor, UpOptions

DEFAULT_TIMEOUT = 45.0
EVENT_TYPES = ("payment.completed", "payment.expired", "payment.failed")
# After the last expected webhook, how long to keep listening for late extras or duplicates.
GRACE_SECONDS = 1.5
DISPATCH_INTERVAL = "0.3"
LOG_TAIL_LINES = 25


def _child_env(base: Mapping[str, str], data_dir: Path, token: str) -> dict[str, str]:
    """The children's environment: the caller's, minus any WATCHER_/VOLTAGE_ setting."""
    env = clean_env(
        base,
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


def _settings(data_dir: Path, token: str) -> Settings:
    """The demo's own settings, whatever the environment or a .env file says."""
    return load_settings(
        _env_file=None,
        watcher_data_dir=data_dir,
        watcher_redis_url=None,
        watcher_api_tokens=[token],
        watcher_webhook_allow_private=True,
        watcher_dispatch_interval=float(DISPATCH_INTERVAL),
        watcher_log_level="WARNING",
        voltage_organization_id="demo-org",
        voltage_environment_id="demo-env",
        voltage_wallet_id="demo-wallet",
    )


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


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
        self.run = Progress(self.console, self.receiver)
        self.supervisor: Supervisor | None = None
        self._client: DemoClient | None = None

    @property
    def client(self) -> DemoClient:
        if self._client is None:
            raise DemoError("the stack is not running")
        return self._client

    def alive(self) -> str | None:
        """Why the run cannot go on (a child exited), or None."""
        return first_dead(self.supervisor.children) if self.supervisor is not None else None

    def start(self) -> None:
        c = self.console
        c.step(1, 5, "Starting Redis, the Voltage simulator, the API, a worker and beat")
        settings = _settings(self.data_dir, self.token)
        configure_logging(settings)
        options = UpOptions(
            api_port=free_port(), simulate=True, simulator_port=free_port(), flower_port=None
        )
        self.supervisor = Supervisor(settings, options)
        self.supervisor.env = _child_env(self.supervisor.env, self.data_dir, self.token)
        started = time.monotonic()
        # A Ctrl-C in the middle of start() would leave a half-started supervisor behind (its
        # embedded Redis is only recorded once it answers), so the interrupt waits for start().
        with interrupts_deferred(), output_to(self.log_path):
            self.supervisor.start()
        self._client = DemoClient(
            api_url=f"http://127.0.0.1:{options.api_port}",
            simulator_url=f"http://127.0.0.1:{options.simulator_port}",
            token=self.token,
            deadline=self.deadline,
        )
        self._client.wait_ready(self.alive)
        c.detail(
            f"ready in {time.monotonic() - started:.1f} s: API {self.client.api_url}, "
            f"simulated Voltage {self.client.simulator_url}/v1"
        )
        c.detail(f"temporary data dir {self.tmp}")

    def subscribe(self) -> None:
        c = self.console
        c.step(2, 5, "Subscribing a local webhook receiver (over the HTTP API)")
        self.receiver.start()
        subscription = self.client.api_json(
            "POST",
            "/v1/subscriptions",
            {
                "url": self.receiver.url(),
                "event_types": list(EVENT_TYPES),
                "description": "watcher demo receiver",
            },
            ok=(201,),
        )
        self.receiver.secret = str(subscription["secret"])
        c.detail(f"{self.receiver.url()} -> subscription {subscription['id']}")
        c.detail("signing secret received (shown once; the receiver verifies with it)")

    def pay_one(self) -> None:
        c, client, run = self.console, self.client, self.run
        c.step(3, 5, "Creating a payment of 21 sats: POST /v1/payments")
        payment = client.create_payment(21_000, "watcher demo: a coffee")
        payment_id = str(payment["id"])
        run.expected[payment_id] = "payment.completed"
        c.detail(f"payment {payment_id}, status {payment['status']}")
        c.detail("BOLT11 (a signet test invoice from the simulator; no real wallet pays it):")
        c.say(str(payment["payment_request"]))
        c.qr(f"lightning:{payment['payment_request']}".upper())

        c.step(4, 5, "Paying it in the simulator and waiting for the webhook")
        run.acted_at[payment_id] = time.monotonic()
        client.simulate(payment_id, "settle")
        c.detail(f"POST /_sim/payments/{payment_id}/settle")
        run.collect({payment_id}, self.deadline, self.alive)
        if payment_id not in run.done:
            raise DemoError("no payment.completed webhook in time")

    def expire_and_fail(self) -> None:
        c, client, run = self.console, self.client, self.run
        c.step(5, 5, "Two more payments: one expires, one fails")
        expiring = str(client.create_payment(5_000, "watcher demo: never paid")["id"])
        failing = str(client.create_payment(7_000, "watcher demo: routing fails")["id"])
        run.expected[expiring] = "payment.expired"
        run.expected[failing] = "payment.failed"
        run.acted_at[expiring] = time.monotonic()
        client.simulate(expiring, "expire")
        c.detail(f"payment {expiring}: let it expire  (POST /_sim/payments/<id>/expire)")
        run.acted_at[failing] = time.monotonic()
        client.simulate(failing, "fail")
        c.detail(f"payment {failing}: make it fail   (POST /_sim/payments/<id>/fail)")
        run.collect({expiring, failing}, self.deadline, self.alive)
        run.linger(min(GRACE_SECONDS, max(0.0, self.deadline.remaining())))

    def verdict(self, *, finished: bool = True) -> Verdict:
        verdict = check_deliveries(self.run.expected, self.receiver.snapshot())
        if self.run.expected:
            self.run.report(verdict, finished=finished)
        return verdict

    def stop(self, code: int) -> None:
        """Everything down, the directory gone (unless --keep); safe after any failure."""
        with signals_ignored():
            self.console.say("\nStopping everything...")
            self.receiver.stop()
            if self.supervisor is not None:
                with output_to(self.log_path):
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
    restore = raise_on_sigterm()
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
