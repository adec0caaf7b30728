"""Operational events (issue 16): when a subscription is disabled by a 410, when a delivery
dies, and when a failing subscriber recovers, an admin subscription that asks for it receives a
signed notice, through a real worker; an app's subscription cannot ask for them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from tests.test_api import ApiClient, api_stack, error_of, fields_of, ok, serve
from watcher.delivery.event_catalog import schema_of
from watcher.receiver import Answer, Receiver

pytestmark = pytest.mark.timeout(120)

NOTICES = ["subscription.disabled", "delivery.dead", "subscription.recovered"]


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    stack = api_stack(make_stack)
    stack.start_worker(concurrency=2)
    stack.start_beat()
    return stack


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack, invoice_wait=3.0) as client:
        yield client


def notices_at(receiver: Receiver, secret: str, event_type: str) -> list[dict[str, Any]]:
    """The verified notices of that type the operator's receiver got."""
    found = []
    for got in list(receiver.received):
        body = Webhook(secret).verify(got.body, got.headers)
        if body["type"] == event_type:
            jsonschema.validate(body, schema_of(event_type))
            found.append(body)
    return found


def test_a_410_and_a_dead_delivery_reach_the_operator_signed(
    api: ApiClient, sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    operator, gone = receivers(), receivers()
    gone.default = Answer(status=410)
    ops = ok(api.post("/v1/subscriptions", {"url": operator.url(), "event_types": NOTICES}), 201)
    doomed = ok(api.post("/v1/subscriptions", {"url": gone.url()}), 201)
    payment = ok(api.post("/v1/payments", {"amount_msats": 2_000}), 201)
    sim_control.settle(payment["id"])

    (disabled,) = wait_until(
        lambda: notices_at(operator, ops["secret"], "subscription.disabled"),
        timeout=30, message="subscription.disabled at the operator",
    )  # fmt: skip
    assert disabled["data"]["subscription_id"] == doomed["id"]
    assert "410" in disabled["data"]["reason"]
    (dead,) = wait_until(
        lambda: notices_at(operator, ops["secret"], "delivery.dead"),
        timeout=30, message="delivery.dead at the operator",
    )  # fmt: skip
    assert (dead["data"]["subscription_id"], dead["data"]["payment_id"]) == (
        doomed["id"],
        payment["id"],
    )
    assert dead["data"]["last_status_code"] == 410
    # The operator's subscription takes notices only: not the payment's own event.
    assert {json.loads(b)["type"] for b in operator.bodies()} <= set(NOTICES)


def test_a_failing_subscriber_that_answers_again_is_announced_recovered(
    api: ApiClient, sim_control: SimControl, receivers: Callable[[], Receiver]
) -> None:
    operator, flaky = receivers(), receivers()
    flaky.answer(500)  # the first attempt fails, the retry (0.3 s later) succeeds
    ops = ok(api.post("/v1/subscriptions", {"url": operator.url(), "event_types": NOTICES}), 201)
    sub = ok(api.post("/v1/subscriptions", {"url": flaky.url()}), 201)
    payment = ok(api.post("/v1/payments", {"amount_msats": 2_000}), 201)
    sim_control.settle(payment["id"])
    (recovered,) = wait_until(
        lambda: notices_at(operator, ops["secret"], "subscription.recovered"),
        timeout=30, message="subscription.recovered at the operator",
    )  # fmt: skip
    assert recovered["data"]["subscription_id"] == sub["id"]
    assert recovered["data"]["failing_since"] <= recovered["data"]["recovered_at"]
    assert notices_at(operator, ops["secret"], "delivery.dead") == []


def test_an_apps_subscription_cannot_take_operational_events(api: ApiClient) -> None:
    ok(api.post("/v1/apps", {"name": "shop"}), 201)
    key = ok(api.post("/v1/keys", {"app": "shop"}), 201)["key"]
    body = {"url": "http://127.0.0.1:9/ops", "event_types": ["delivery.dead"]}
    refused = error_of(api.post("/v1/subscriptions", body, token=key), 422)
    assert "body.event_types" in fields_of(refused)
    sub = ok(api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/x"}, token=key), 201)
    patch = {"event_types": ["payment.completed", "subscription.disabled"]}
    error_of(api.patch(f"/v1/subscriptions/{sub['id']}", patch, token=key), 422)
    assert ok(api.get(f"/v1/subscriptions/{sub['id']}", token=key))["event_types"] == [
        "payment.completed",
        "payment.failed",
        "payment.expired",
    ]
