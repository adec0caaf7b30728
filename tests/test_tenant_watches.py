"""Who owns a payment when its creation races a Voltage webhook or another app's watch: the
app that created it, always; and another app's payment answers exactly as an unknown one does,
even while Voltage is down."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Stack
from tests.test_api import ApiClient, api_stack, ok, serve
from watcher.engine.watching import ForeignPayment, watch_existing
from watcher.voltage.errors import VoltageTransientError
from watcher.voltage.models import Payment

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack, invoice_wait=3.0) as client:
        yield client


def app_key(api: ApiClient, name: str) -> tuple[str, str]:
    """A new app's id and write key."""
    app_id = ok(api.post("/v1/apps", {"name": name}), 201)["id"]
    return app_id, ok(api.post("/v1/keys", {"app": name}), 201)["key"]


def before_adopt(stack: Stack, act: Callable[[str], None]) -> None:
    """Run `act(payment_id)` after Voltage accepted a create and before the watcher adopts it,
    where a Voltage webhook or another app's watch can land."""
    voltage = stack.runtime.voltage
    real_wait = voltage.wait_for_invoice

    def wait_then_race(payment_id: str, **options: Any) -> Payment:
        payment = real_wait(payment_id, **options)  # Voltage shows it from now on
        act(payment_id)
        return payment

    voltage.wait_for_invoice = wait_then_race  # type: ignore[method-assign]


def test_a_voltage_webhook_before_adoption_keeps_the_payment_the_creating_apps(
    api: ApiClient, stack: Stack
) -> None:
    app_id, key = app_key(api, "shop")
    before_adopt(stack, lambda pid: watch_existing(stack.runtime, pid))  # as the ingress does
    order = {"amount_msats": 1_000, "client_id": "o-1"}
    made = ok(api.post("/v1/payments", order, token=key), 201)  # created, though adopted first
    assert (made["app_id"], made["source"]) == (app_id, "created")
    payments = stack.runtime.payments
    assert payments.redis.hget(payments.keys.payment(made["id"]), "client_id") == "o-1"
    assert ok(api.get(f"/v1/payments/{made['id']}", token=key))["app_id"] == app_id
    assert ok(api.post("/v1/payments", order, token=key), 200)["id"] == made["id"]
    audit = ok(api.get("/v1/audit?action=payment.created"))["items"]
    assert [entry["target"] for entry in audit] == [made["id"]]


def test_another_app_cannot_watch_a_payment_being_created(api: ApiClient, stack: Stack) -> None:
    a_id, a_key = app_key(api, "a")
    b_id, _b_key = app_key(api, "b")
    refused: list[str] = []

    def b_watches(payment_id: str) -> None:
        with pytest.raises(ForeignPayment):
            watch_existing(stack.runtime, payment_id, b_id)
        refused.append(payment_id)

    before_adopt(stack, b_watches)
    made = ok(api.post("/v1/payments", {"amount_msats": 1_000}, token=a_key), 201)
    assert refused == [made["id"]]
    assert made["app_id"] == a_id


def test_another_apps_payment_answers_as_an_unknown_one_while_voltage_is_down(
    api: ApiClient, stack: Stack
) -> None:
    _a, a_key = app_key(api, "a")
    _b, b_key = app_key(api, "b")
    theirs = ok(api.post("/v1/payments", {"amount_msats": 1_000}, token=a_key), 201)["id"]
    before = stack.runtime.redis.hgetall(stack.runtime.payments.keys.payment(theirs))

    def voltage_down(*_args: Any, **_kwargs: Any) -> Payment:
        raise VoltageTransientError("Voltage is down")

    stack.runtime.voltage.get_payment = voltage_down  # type: ignore[method-assign]
    unknown = api.post("/v1/watches", {"payment_id": str(uuid.uuid4())}, token=b_key)
    foreign = api.post("/v1/watches", {"payment_id": theirs}, token=b_key)
    assert unknown.status_code >= 500
    assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())
    assert stack.runtime.redis.hgetall(stack.runtime.payments.keys.payment(theirs)) == before
