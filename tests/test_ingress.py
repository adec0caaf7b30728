"""Voltage's own webhooks at POST /v1/voltage/webhooks: a signed one is a hint that makes the
watcher re-read the payment at once; forged, stale and unsigned ones change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from tests.test_api import ApiClient, api_stack, error_of, ok, serve
from watcher.api.ingress import SignatureError, sign_voltage_webhook, verify_voltage_webhook
from watcher.api.ingress_guard import MAX_NESTING, nesting_exceeds
from watcher.engine.watching import create_and_watch

pytestmark = pytest.mark.timeout(120)

SECRET = "voltage-shared-secret-for-tests"
PATH = "/v1/voltage/webhooks"


def voltage_signature(secret: str, body: bytes, timestamp: str) -> str:
    """Written out from Voltage's description, independently of the code under test."""
    digest = hmac.new(secret.encode(), body + b"." + timestamp.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def payload(payment: dict[str, Any], kind: str = "receive", event: str = "completed") -> bytes:
    return json.dumps({"type": kind, "detail": {"event": event, "data": payment}}).encode()


FRESH = "a fresh webhook id"


def send(
    api: ApiClient,
    body: bytes,
    *,
    secret: str | None = SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
    webhook_id: str | None = FRESH,
) -> requests.Response:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"content-type": "application/json"}
    if webhook_id is not None:
        headers["x-voltage-webhook-id"] = str(uuid.uuid4()) if webhook_id == FRESH else webhook_id
    if secret is not None:
        headers["x-voltage-timestamp"] = stamp
        headers["x-voltage-signature"] = signature or voltage_signature(secret, body, stamp)
    return api.post(PATH, data=body, headers=headers, token=False)


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    # No worker and no beat: only the webhook can make the watcher look at a payment now.
    return api_stack(make_stack, VOLTAGE_WEBHOOK_SECRET=SECRET)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack) as client:
        yield client


def reads_of(sim_control: SimControl, payment_id: str) -> int:
    return int(sim_control.stats()["per_payment"].get(payment_id, 0))


def events_of(stack: Stack, payment_id: str) -> list[dict[str, str]]:
    return [e for e in stack.runtime.payments.outbox_events() if e["payment_id"] == payment_id]


def test_signature_helper_matches_the_documented_scheme() -> None:
    body, stamp = b'{"type":"receive"}', "1764100000"
    signed = sign_voltage_webhook(SECRET, body, stamp)
    assert signed == voltage_signature(SECRET, body, stamp)
    verify_voltage_webhook(SECRET, body, timestamp=stamp, signature=signed, now=1764100100)
    for kwargs in (
        {"timestamp": None, "signature": signed},
        {"timestamp": stamp, "signature": None},
        {"timestamp": "12.5", "signature": signed},
        {"timestamp": stamp, "signature": sign_voltage_webhook(SECRET, body + b" ", stamp)},
        {"timestamp": stamp, "signature": sign_voltage_webhook("other-secret", body, stamp)},
    ):
        with pytest.raises(SignatureError):
            verify_voltage_webhook(SECRET, body, now=1764100100, **kwargs)
    with pytest.raises(SignatureError, match="window"):
        verify_voltage_webhook(SECRET, body, timestamp=stamp, signature=signed, now=1764100301)


def test_signed_webhook_makes_the_watcher_reread_and_emit_at_once(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    rt = stack.runtime
    payment = create_and_watch(rt, amount_msats=12_000, description="hinted").record
    settled = sim_control.settle(payment.id)
    reads = reads_of(sim_control, payment.id)

    answer = ok(send(api, payload(settled)), 202)
    assert answer == {
        "status": "accepted",
        "payment_id": payment.id,
        "action": "poll",
        "reason": None,
    }
    (event,) = wait_until(lambda: events_of(stack, payment.id), message="the event")
    assert event["type"] == "payment.completed"
    body = json.loads(event["body"])
    assert body["data"]["previous_status"] == "receiving"
    assert body["data"]["payment"]["status"] == "completed"
    assert reads_of(sim_control, payment.id) == reads + 1  # re-read from Voltage, once
    record = rt.payments.get(payment.id)
    assert record is not None
    assert record.status == "completed"

    # Voltage delivers twice: harmless, nothing is read or emitted again.
    ignored = ok(send(api, payload(settled)), 202)
    assert ignored["status"] == "ignored"
    assert ignored["action"] == "none"
    assert len(events_of(stack, payment.id)) == 1
    assert reads_of(sim_control, payment.id) == reads + 1


def test_the_body_is_only_a_hint_what_voltage_says_on_reread_wins(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    payment = create_and_watch(stack.runtime, amount_msats=1_000).record
    reads = reads_of(sim_control, payment.id)
    # Signed, but claims "completed" for a payment Voltage still has as receiving.
    lie = {"id": payment.id, "status": "completed", "wallet_id": "wallet-test"}
    ok(send(api, payload(lie)), 202)
    wait_until(lambda: reads_of(sim_control, payment.id) > reads, message="the re-read")
    wait_until(
        lambda: (r := stack.runtime.payments.get(payment.id)) and r.poll_count > 0,
        message="the poll recorded",
    )
    assert events_of(stack, payment.id) == []
    record = stack.runtime.payments.get(payment.id)
    assert record is not None
    assert record.status == "receiving"


def test_unknown_receive_is_adopted_and_unknown_send_is_ignored(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    elsewhere = stack.runtime.voltage.create_receive(wallet_id="wallet-test", amount_msats=2_000)
    settled = sim_control.settle(elsewhere.id)
    answer = ok(send(api, payload(settled)), 202)
    assert answer["action"] == "watch"
    (event,) = wait_until(lambda: events_of(stack, elsewhere.id), message="the adoption event")
    assert event["type"] == "payment.completed"
    record = stack.runtime.payments.get(elsewhere.id)
    assert record is not None
    assert record.source == "watched"

    stranger = str(uuid.uuid4())
    answer = ok(send(api, payload({"id": stranger}, kind="send", event="succeeded")), 202)
    assert answer["status"] == "ignored"
    assert stack.runtime.payments.get(stranger) is None
    assert reads_of(sim_control, stranger) == 0


def test_forged_stale_and_unsigned_webhooks_are_refused_and_change_nothing(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    rt = stack.runtime
    payment = create_and_watch(rt, amount_msats=3_000).record
    settled = sim_control.settle(payment.id)
    body = payload(settled)
    reads = reads_of(sim_control, payment.id)
    now = int(time.time())
    attempts = {
        "unsigned": send(api, body, secret=None),
        "wrong secret": send(api, body, secret="not-the-secret"),
        "tampered body": send(
            api,
            body.replace(b"completed", b"completed "),
            signature=voltage_signature(SECRET, body, str(now)),
            timestamp=now,
        ),
        # Well outside the 300 s window: the requests take time, and `now` was rounded down.
        "stale": send(api, body, timestamp=now - 330),
        "from the future": send(api, body, timestamp=now + 330),
        "garbage signature": send(api, body, signature="not base64 at all"),
        "signature of another timestamp": send(
            api, body, signature=voltage_signature(SECRET, body, str(now - 1)), timestamp=now
        ),
    }
    for name, response in attempts.items():
        error = error_of(response, 401, "invalid_signature")
        assert SECRET not in error["detail"], name
    # A bearer token does not stand in for a signature either.
    error_of(api.post(PATH, data=body, headers={"content-type": "application/json"}), 401)

    assert reads_of(sim_control, payment.id) == reads
    assert events_of(stack, payment.id) == []
    record = rt.payments.get(payment.id)
    assert record is not None
    assert record.status == "receiving"
    assert record.poll_count == 0


def test_signed_but_unusable_payloads_are_400(api: ApiClient) -> None:
    for body in (b"not json", b"[]", b'{"type": "receive"}', b'{"detail": {"data": {"id": 5}}}'):
        error_of(send(api, body), 400, "invalid_payload")


def test_a_signed_hint_naming_a_key_of_another_type_is_400(api: ApiClient, stack: Stack) -> None:
    """`<id>:transitions` is a Redis list: spliced into a key name it answered 500 (WRONGTYPE)."""
    real = create_and_watch(stack.runtime, amount_msats=1_000).record.id
    for hostile in (f"{real}:transitions", "pay-1", real + "\n"):
        error = error_of(send(api, payload({"id": hostile})), 400, "invalid_payload")
        assert "UUID" in error["detail"]


def test_ingress_is_off_without_a_secret(make_stack: Callable[..., Stack]) -> None:
    stack = api_stack(make_stack)  # VOLTAGE_WEBHOOK_SECRET unset
    with serve(stack) as api:
        body = payload({"id": str(uuid.uuid4())})
        error = error_of(send(api, body), 404, "ingress_disabled")
        assert "VOLTAGE_WEBHOOK_SECRET" in error["detail"]


def polled_once(stack: Stack, payment_id: str) -> bool:
    record = stack.runtime.payments.get(payment_id)
    return record is not None and record.poll_count > 0


def test_replays_of_one_signed_webhook_are_2xx_and_cost_one_read(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    # Still receiving, so every hint that got through would be a Voltage read.
    payment = create_and_watch(stack.runtime, amount_msats=4_000).record
    body, stamp, webhook_id = payload({"id": payment.id}), int(time.time()), str(uuid.uuid4())
    reads = reads_of(sim_control, payment.id)

    answers = [send(api, body, timestamp=stamp, webhook_id=webhook_id) for _ in range(200)]
    assert {a.status_code for a in answers} == {202}
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("accepted") == 1, statuses[:5]
    assert all("replay" in (a.json()["reason"] or "") for a in answers[1:])
    wait_until(lambda: polled_once(stack, payment.id), message="the one re-read")
    assert reads_of(sim_control, payment.id) == reads + 1

    # Voltage's retry of the same webhook id, signed afresh at a later second: a replay too.
    again = ok(send(api, body, timestamp=stamp + 1, webhook_id=webhook_id), 202)
    assert again["status"] == "ignored"
    assert reads_of(sim_control, payment.id) == reads + 1


def test_same_body_and_timestamp_under_another_or_no_webhook_id_is_a_replay(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    payment = create_and_watch(stack.runtime, amount_msats=5_000).record
    body, stamp = payload({"id": payment.id}), int(time.time())
    reads = reads_of(sim_control, payment.id)

    assert ok(send(api, body, timestamp=stamp), 202)["status"] == "accepted"
    for webhook_id in (str(uuid.uuid4()), None, ""):
        answer = ok(send(api, body, timestamp=stamp, webhook_id=webhook_id), 202)
        assert answer["status"] == "ignored", webhook_id
        assert "replay" in (answer["reason"] or "")
    wait_until(lambda: polled_once(stack, payment.id), message="the one re-read")
    assert reads_of(sim_control, payment.id) == reads + 1


def test_a_flood_of_distinct_hints_costs_at_most_one_read_per_payment_per_second(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    payment = create_and_watch(stack.runtime, amount_msats=6_000).record
    reads = reads_of(sim_control, payment.id)

    def hint(n: int) -> requests.Response:
        # Distinct bodies and ids: none of these is a replay of another.
        return send(api, payload({"id": payment.id, "n": n}, event=f"event-{n}"))

    started = time.monotonic()
    answers = [ok(hint(n), 202) for n in range(30)]
    seconds = time.monotonic() - started
    accepted = [a for a in answers if a["status"] == "accepted"]
    # One per started second at most (the flood normally fits in one).
    assert 1 <= len(accepted) <= 1 + int(seconds)
    assert all("second" in (a["reason"] or "") for a in answers if a["status"] == "ignored")
    wait_until(lambda: polled_once(stack, payment.id), message="the first re-read")
    assert reads_of(sim_control, payment.id) - reads <= 1 + int(seconds)

    # Once the second has passed, a hint reads again.
    before = reads_of(sim_control, payment.id)
    counter = iter(range(100, 10_000))
    wait_until(
        lambda: hint(next(counter)).json()["status"] == "accepted",
        interval=0.1,
        message="a hint accepted after the second",
    )
    wait_until(lambda: reads_of(sim_control, payment.id) > before, message="the next re-read")


def nested(depth: int, payment_id: str) -> bytes:
    inner = b"[" * depth + b"]" * depth
    return b'{"type":"receive","detail":{"event":"completed","data":{"id":"%s","x":%s}}}' % (
        payment_id.encode(),
        inner,
    )


def test_a_signed_body_nested_5000_deep_is_400_not_500(
    api: ApiClient, stack: Stack, sim_control: SimControl
) -> None:
    payment = create_and_watch(stack.runtime, amount_msats=7_000).record
    reads = reads_of(sim_control, payment.id)
    error = error_of(send(api, nested(5_000, payment.id)), 400, "invalid_payload")
    assert "nest" in error["detail"]
    assert reads_of(sim_control, payment.id) == reads
    # Brackets inside strings are text, not nesting; a sane depth still goes through.
    deep_text = json.dumps(
        {"type": "receive", "detail": {"data": {"id": payment.id, "memo": '\\"' + "[" * 5000}}}
    ).encode()
    assert ok(send(api, deep_text), 202)["status"] == "accepted"


def test_the_nesting_prescan_counts_brackets_outside_strings_only() -> None:
    at_limit = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert not nesting_exceeds(at_limit)
    assert nesting_exceeds("[" + at_limit + "]")
    assert nesting_exceeds('{"a":' * (MAX_NESTING + 1))  # unclosed still counts
    deep_string = json.dumps(["[{" * 5_000])
    assert not nesting_exceeds(deep_string)
    # An escaped quote does not end a string; an escaped backslash before a quote does.
    assert not nesting_exceeds(r'["\"[[', limit=1)
    assert nesting_exceeds(r'["\\"[[', limit=2)
    assert not nesting_exceeds(r'["\\\"[[[["]', limit=1)
