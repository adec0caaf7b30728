"""`watcher demo`: the whole run in a subprocess, and the verdict and receiver on their own."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support import clean_env
from watcher.delivery.signing import generate_secret, webhook_headers
from watcher.demo import DemoReceiver
from watcher.demo_console import Console
from watcher.demo_verdict import check_deliveries
from watcher.receiver import Delivery


def run_demo_subprocess(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`watcher demo`, exactly as the README's first command runs it."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", "demo", *args],
        env=clean_env(PYTHONIOENCODING="utf-8"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def data_dir_of(output: str) -> Path:
    match = re.search(r"temporary data dir (\S+)", output)
    assert match, output
    return Path(match.group(1))


# --- the whole demo ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_demo_runs_end_to_end_and_cleans_up() -> None:
    result = run_demo_subprocess()  # the demo's own 45 s budget bounds it
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "SIMULATED Voltage API" in output
    for event_type in ("payment.completed", "payment.expired", "payment.failed"):
        assert re.search(rf"webhook {re.escape(event_type)} .*\n.*verified ✓", output), output
    assert output.count("signature verified ✓") == 3
    assert "all 3 events arrived exactly once" in output
    assert re.search(r"\blntbs[0-9a-z]+\b", output), "the BOLT11 is printed"
    assert "▀" not in output, "no QR code when stdout is not a TTY"
    assert "█" not in output
    # Celery banners and process logs go to the log file, not into the demo's output.
    assert "celery@" not in output + result.stderr
    assert not data_dir_of(output).exists(), "the temporary directory is removed"


@pytest.mark.timeout(60)
def test_demo_out_of_time_fails_cleanly() -> None:
    result = run_demo_subprocess("--timeout", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "demo failed" in result.stdout
    assert "--timeout" in result.stdout or "not ready in time" in result.stdout
    assert "Stopping everything" in result.stdout
    match = re.search(r"temporary data dir (\S+)", result.stdout)
    if match:
        assert not Path(match.group(1)).exists()


# The receiver never passes payment.failed on, and hands payment.completed over twice.
LOSSY_DEMO = """
import sys
import watcher.demo as demo

original = demo.DemoReceiver.receive


def receive(self, headers, body):
    if b"payment.failed" in body:
        return 204
    status = original(self, headers, body)
    if b"payment.completed" in body:
        original(self, headers, body)
    return status


demo.DemoReceiver.receive = receive
sys.exit(demo.run_demo(timeout=20))
"""


@pytest.mark.timeout(60)
def test_demo_reports_a_missing_event_and_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOSSY_DEMO],
        env=clean_env(PYTHONIOENCODING="utf-8"),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert re.search(r"✗ missing: payment\.failed for payment [0-9a-f-]{36}", output), output
    assert "was delivered more than once (same webhook-id: allowed)" in output
    assert "missing: payment.completed" not in output
    assert "missing: payment.expired" not in output
    assert "all 3 events arrived" not in output
    assert not data_dir_of(output).exists()


# --- the verdict ------------------------------------------------------------------------------

PAID, EXPIRED, FAILED = "pay-1", "pay-2", "pay-3"
EXPECTED = {PAID: "payment.completed", EXPIRED: "payment.expired", FAILED: "payment.failed"}


def ok(webhook_id: str, event_type: str, payment_id: str) -> Delivery:
    return Delivery(webhook_id, verified=True, event_type=event_type, payment_id=payment_id)


ALL_THREE = [
    ok("evt_1", "payment.completed", PAID),
    ok("evt_2", "payment.expired", EXPIRED),
    ok("evt_3", "payment.failed", FAILED),
]


def test_every_event_once_is_ok() -> None:
    verdict = check_deliveries(EXPECTED, ALL_THREE)
    assert verdict.ok
    assert verdict.missing == ()
    assert verdict.duplicates == ()
    assert verdict.problems == ()


def test_order_does_not_matter() -> None:
    assert check_deliveries(EXPECTED, list(reversed(ALL_THREE))).ok


def test_redelivery_with_the_same_webhook_id_is_allowed_and_reported() -> None:
    verdict = check_deliveries(EXPECTED, [*ALL_THREE, ALL_THREE[0], ALL_THREE[0]])
    assert verdict.ok
    assert verdict.duplicates == ("evt_1",)


def test_missing_events_fail_naming_each() -> None:
    verdict = check_deliveries(EXPECTED, ALL_THREE[:1])
    assert not verdict.ok
    assert verdict.missing == (("payment.expired", EXPIRED), ("payment.failed", FAILED))
    assert verdict.problems == ()


def test_nothing_received_misses_everything() -> None:
    verdict = check_deliveries(EXPECTED, [])
    assert not verdict.ok
    assert len(verdict.missing) == 3


def test_second_distinct_event_for_a_payment_fails() -> None:
    verdict = check_deliveries(EXPECTED, [*ALL_THREE, ok("evt_9", "payment.completed", PAID)])
    assert not verdict.ok
    assert verdict.missing == ()
    (problem,) = verdict.problems
    assert PAID in problem
    assert "2 distinct events" in problem


def test_wrong_event_type_fails_and_the_right_one_is_missing() -> None:
    deliveries = [*ALL_THREE[:2], ok("evt_3", "payment.completed", FAILED)]
    verdict = check_deliveries(EXPECTED, deliveries)
    assert not verdict.ok
    assert verdict.missing == (("payment.failed", FAILED),)
    assert any("expected payment.failed" in p for p in verdict.problems)


def test_event_for_an_unknown_payment_fails() -> None:
    verdict = check_deliveries(EXPECTED, [*ALL_THREE, ok("evt_4", "payment.failed", "other")])
    assert not verdict.ok
    assert verdict.missing == ()
    assert any("unexpected payment.failed for payment other" in p for p in verdict.problems)


def test_unverified_delivery_fails_even_if_a_good_copy_came() -> None:
    forged = Delivery("evt_1", verified=False, error="no v1 signature matches")
    verdict = check_deliveries(EXPECTED, [*ALL_THREE, forged])
    assert not verdict.ok
    assert any("failed verification" in p and "no v1 signature" in p for p in verdict.problems)


def test_unverified_only_counts_as_missing() -> None:
    forged = Delivery("evt_1", verified=False, error="bad")
    verdict = check_deliveries(EXPECTED, [forged, *ALL_THREE[1:]])
    assert verdict.missing == (("payment.completed", PAID),)


def test_one_webhook_id_for_two_different_events_fails() -> None:
    reused = ok("evt_1", "payment.failed", FAILED)
    verdict = check_deliveries(EXPECTED, [*ALL_THREE, reused])
    assert not verdict.ok
    assert any("carried two different events" in p for p in verdict.problems)


# --- the receiver and the console -------------------------------------------------------------


def signed(secret: str, msg_id: str, event: Mapping[str, object]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(event).encode()
    headers = webhook_headers(
        msg_id=msg_id, timestamp=int(time.time()), body=body, secrets=[secret], user_agent="t"
    )
    return headers, body


def test_receiver_verifies_records_and_refuses_forgeries() -> None:
    receiver = DemoReceiver()
    event = {"type": "payment.completed", "data": {"payment_id": PAID}}
    headers, body = signed(generate_secret(), "evt_a", event)
    assert receiver.receive(headers, body) == 503, "no secret yet: answer so it is retried"

    receiver.secret = generate_secret()
    headers, body = signed(receiver.secret, "evt_a", event)
    assert receiver.receive({k.title(): v for k, v in headers.items()}, body) == 204
    assert receiver.receive(headers, body.replace(b"completed", b"failed")) == 401
    forged_headers, forged_body = signed(generate_secret(), "evt_b", event)
    assert receiver.receive(forged_headers, forged_body) == 401

    first, tampered, forged = receiver.snapshot()
    assert first == Delivery(
        "evt_a", verified=True, event_type="payment.completed", payment_id=PAID, at=first.at
    )
    assert not tampered.verified
    assert tampered.webhook_id == "evt_a"
    assert not forged.verified
    assert forged.error
    assert receiver.arrivals.qsize() == 3
    receiver.stop()


class FakeTty(io.TextIOWrapper):
    def __init__(self, tty: bool) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def getvalue(self) -> str:
        self.flush()
        buffer = self.buffer
        assert isinstance(buffer, io.BytesIO)
        return buffer.getvalue().decode()


def test_qr_code_only_on_a_terminal() -> None:
    invoice = "LIGHTNING:LNTBS210N1P4SWNAYPP50SRPXQ0X0ZH245P8GRWC46EMJM8P6XF9XJD5P7MRE04H96"
    pipe = FakeTty(tty=False)
    Console(pipe).qr(invoice)
    assert pipe.getvalue() == ""
    terminal = FakeTty(tty=True)
    Console(terminal).qr(invoice)
    assert terminal.getvalue().count("\n") > 10


def test_console_falls_back_to_ascii() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    console = Console(stream)
    assert (console.tick, console.cross) == ("OK", "X")
