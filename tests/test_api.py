"""The HTTP API over real HTTP: uvicorn on loopback in a thread, `requests` as the client,
a real Redis, the Voltage simulator and, where webhooks must really go out, a real Celery
worker and beat."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from tests.conftest import SimControl, Stack
from tests.support import wait_until
from watcher.api import create_app
from watcher.api.server import ApiServer
from watcher.receiver import Answer, Receiver
from watcher.redis_server import free_port
from watcher.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

TOKEN = "token-for-tests-0123456789"
OTHER_TOKEN = "second-token-for-tests-9876"
FAST_RETRIES = "0,0.3"


class ApiClient:
    """`requests` against one API server, with the bearer token unless told otherwise."""

    def __init__(self, base_url: str, token: str | None = TOKEN) -> None:
        self.base_url = base_url
        self.token = token
        self.http = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | bool | None = True,
        params: dict[str, Any] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        sent = dict(headers or {})
        chosen = self.token if token is True else token
        if isinstance(chosen, str):
            sent["Authorization"] = f"Bearer {chosen}"
        return self.http.request(
            method,
            self.base_url + path,
            json=body if data is None else None,
            data=data,
            params=params,
            headers=sent,
            timeout=30,
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.call("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("DELETE", path, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.call("PUT", path, body, **kwargs)


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


def error_of(response: requests.Response, status: int, type: str | None = None) -> dict[str, Any]:
    """Check the one error shape and return its inner object."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["detail"], str)
    assert error["detail"]
    assert "Traceback" not in response.text
    if type is not None:
        assert error["type"] == type, error
    return dict(error)


def fields_of(error: dict[str, Any]) -> list[str]:
    return [f["field"] for f in error.get("fields") or []]


@contextmanager
def serve(stack: Stack | Runtime, **options: Any) -> Iterator[ApiClient]:
    runtime = stack if isinstance(stack, Runtime) else stack.runtime
    with ApiServer(create_app(runtime, **options)) as server:
        yield ApiClient(server.base_url)


def api_stack(make_stack: Callable[..., Stack], **overrides: str) -> Stack:
    settings: dict[str, str] = {
        "WATCHER_API_TOKENS": f"{TOKEN},{OTHER_TOKEN}",
        "WATCHER_WEBHOOK_ALLOW_PRIVATE": "true",
        "WATCHER_WEBHOOK_RETRY_SCHEDULE": FAST_RETRIES,
        "WATCHER_WEBHOOK_CONNECT_TIMEOUT": "1",
        "WATCHER_WEBHOOK_TIMEOUT": "2",
        "WATCHER_DELIVERY_LEASE": "5",
        "VOLTAGE_RETRY_BUDGET": "1",
    }
    settings.update(overrides)
    return make_stack(**settings)


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack, invoice_wait=3.0) as client:
        yield client


@pytest.fixture
def clean_faults(sim_control: SimControl) -> Iterator[SimControl]:
    sim_control.clear_faults()
    try:
        yield sim_control
    finally:
        sim_control.clear_faults()


def create_count(sim_control: SimControl) -> int:
    return int(sim_control.stats()["by_route"].get("POST /payments", 0))


# --- auth, error shape, health ----------------------------------------------------------------

EVERY_V1_ROUTE = [
    ("POST", "/v1/payments"),
    ("GET", "/v1/payments"),
    ("GET", "/v1/payments/some-id"),
    ("POST", "/v1/watches"),
    ("POST", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/sub_x"),
    ("PATCH", "/v1/subscriptions/sub_x"),
    ("DELETE", "/v1/subscriptions/sub_x"),
    ("POST", "/v1/subscriptions/sub_x/rotate-secret"),
    ("POST", "/v1/subscriptions/sub_x/test"),
    ("POST", "/v1/subscriptions/sub_x/recover"),
    ("GET", "/v1/deliveries"),
    ("GET", "/v1/deliveries/dlv_x"),
    ("POST", "/v1/deliveries/dlv_x/redeliver"),
    ("GET", "/v1/events"),
    ("GET", "/v1/audit"),
]


def test_every_v1_route_needs_a_valid_bearer_token(api: ApiClient, stack: Stack) -> None:
    for method, path in EVERY_V1_ROUTE:
        body = {"amount_msats": 1} if method in ("POST", "PATCH") else None
        missing = error_of(api.call(method, path, body, token=False), 401, "unauthorized")
        wrong = error_of(api.call(method, path, body, token=TOKEN + "x"), 401, "unauthorized")
        # One answer for every failure: nothing about which tokens exist or how close it was.
        assert missing["detail"] == wrong["detail"] == "missing or wrong bearer token"
        assert api.call(method, path, body, token=False).headers["www-authenticate"]
    for attempt in ("Basic dG9rZW46", f"Token {TOKEN}", "Bearer", f"bearer  {TOKEN[:-1]}"):
        error_of(api.get("/v1/payments", token=False, headers={"Authorization": attempt}), 401)
    # An unauthenticated caller learns nothing about bodies either: 401 before parsing.
    error_of(api.post("/v1/payments", token=False, data=b"{not json"), 401)
    ok(api.get("/v1/payments"))
    ok(api.get("/v1/payments", token=OTHER_TOKEN))
    assert stack.runtime.payments.watched_ids() == []


def test_without_configured_tokens_v1_says_so_and_health_still_answers(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()  # no WATCHER_API_TOKENS
    with capture_logs() as logs, serve(stack) as api:
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert any("WATCHER_API_TOKENS" in e["event"] for e in warnings), logs
        error = error_of(api.get("/v1/payments"), 401, "unauthorized")
        assert "WATCHER_API_TOKENS" in error["detail"]
        ok(api.get("/healthz"))
        ok(api.get("/readyz"))


def test_unknown_routes_methods_and_bodies_get_the_envelope(api: ApiClient) -> None:
    error_of(api.get("/nope"), 404, "not_found")
    error_of(api.get("/v1/nope"), 404, "not_found")
    response = api.call("PUT", "/v1/payments", {})
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"  # both routes of the path
    assert api.delete("/v1/subscriptions").headers["allow"] == "GET, POST"
    assert api.put("/v1/subscriptions/sub_x").headers["allow"] == "DELETE, GET, PATCH"
    error = error_of(
        api.post(
            "/v1/payments", data=b'{"amount_msats": ', headers={"content-type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    assert fields_of(error) == ["body"]
    error = error_of(
        api.post(
            "/v1/payments", data=b'{"amount_msats": 1}', headers={"content-type": "text/plain"}
        ),
        422,
        "validation_error",
    )
    assert fields_of(error) == ["body"]
    error_of(
        api.post(
            "/v1/payments", data=b'{"a": "\xff"}', headers={"content-type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    error = error_of(
        api.post("/v1/payments", data=b"[1, 2]", headers={"content-type": "application/json"}), 422
    )
    assert fields_of(error) == ["body"]
    # Lone surrogates are valid JSON escapes but not text: refused, naming the field.
    error = error_of(
        api.post(
            "/v1/payments",
            data=b'{"amount_msats": 1, "description": "\\ud800"}',
            headers={"content-type": "application/json"},
        ),
        422,
    )
    assert fields_of(error) == ["body.description"]
    big = {"amount_msats": 1, "description": "x" * 70_000}
    error_of(api.post("/v1/payments", big), 413, "payload_too_large")

    def chunked() -> Iterator[bytes]:
        yield b'{"amount_msats": 1, "description": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    response = api.http.post(
        api.base_url + "/v1/payments",
        data=chunked(),
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        timeout=10,
    )
    error_of(response, 413, "payload_too_large")


def test_health_readiness_and_metrics(api: ApiClient, stack: Stack) -> None:
    assert ok(api.get("/healthz", token=False)) == {"status": "ok"}
    assert ok(api.get("/readyz", token=False)) == {"status": "ready", "redis": "ok"}
    stack.runtime.payments.count("polls", 7)
    stack.runtime.payments.count("transitions:completed", 2)
    stack.runtime.payments.count("voltage_errors:transient", 3)
    stack.runtime.payments.count("deliveries:dead", 1)
    stack.runtime.payments.count("voltage_requests:confirm", 4)
    stack.runtime.redis.zadd(stack.runtime.payments.keys.poll_schedule, {"p-old": time.time() - 30})
    stack.runtime.redis.zadd(stack.runtime.payments.keys.retry_schedule, {"d-1": time.time() + 60})
    stack.runtime.payments.observe_latency("poll", 0.003)
    stack.runtime.payments.observe_latency("poll", 0.2)
    response = api.get("/metrics", token=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        "watcher_redis_up 1.0",
        "watcher_pending_payments 1.0",
        "watcher_polls_total 7.0",
        'watcher_transitions_total{status="completed"} 2.0',
        'watcher_voltage_errors_total{kind="transient"} 3.0',
        'watcher_deliveries_total{outcome="dead"} 1.0',
        "watcher_dead_letters_total 1.0",
        'watcher_voltage_requests_total{purpose="confirm"} 4.0',
        'watcher_voltage_requests_total{purpose="sweep"} 0.0',
        "watcher_detection_fallback 0.0",
        'watcher_delivery_queue_depth{queue="retry"} 1.0',
        'watcher_delivery_queue_depth{queue="first_attempt"} 0.0',
        'watcher_oldest_overdue_seconds{schedule="retry"} 0.0',
        'watcher_poll_duration_seconds_bucket{le="0.005"} 1.0',
        'watcher_poll_duration_seconds_bucket{le="0.1"} 1.0',
        'watcher_poll_duration_seconds_bucket{le="0.25"} 2.0',
        'watcher_poll_duration_seconds_bucket{le="+Inf"} 2.0',
        "watcher_poll_duration_seconds_count 2.0",
        "watcher_poll_duration_seconds_sum 0.203",
    ):
        assert line in text, line
    overdue = next(
        line
        for line in text.splitlines()
        if line.startswith('watcher_oldest_overdue_seconds{schedule="poll"}')
    )
    assert 29 <= float(overdue.split()[-1]) < 120


def test_redis_down_means_not_ready_and_503_never_500(make_stack: Callable[..., Stack]) -> None:
    stack = api_stack(make_stack)
    dead = stack.settings.model_copy(
        update={"watcher_redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    )
    with serve(Runtime.from_settings(dead)) as api:
        ok(api.get("/healthz"))
        error_of(api.get("/readyz"), 503, "not_ready")
        error = error_of(api.get("/v1/payments"), 503, "redis_unavailable")
        assert "redis" in error["detail"].lower()
        assert api.get("/v1/payments").headers["retry-after"]
        # An API key is looked up in Redis: 503 too, never 500.
        error_of(api.get("/v1/payments", token="vwk_" + "x" * 43), 503, "redis_unavailable")
        response = api.get("/metrics")
        assert response.status_code == 200
        assert "watcher_redis_up 0.0" in response.text


# --- payments and watches ------------------------------------------------------------------


def test_create_read_and_list_payments(api: ApiClient, sim_control: SimControl) -> None:
    created = ok(
        api.post(
            "/v1/payments",
            {
                "amount_msats": 21_000,
                "description": "Order 42",
                "expiration": 600,
                "metadata": {"order": "42"},
            },
        ),
        201,
    )
    assert created["status"] == "receiving"
    assert created["payment_request"].startswith("lntbs")
    assert created["amount_msats"] == 21_000
    assert created["metadata"] == {"order": "42"}
    assert created["expires_at"].endswith("Z")
    assert created["watching"] is True
    payment_id = created["id"]

    detail = ok(api.get(f"/v1/payments/{payment_id}"))
    assert detail["id"] == payment_id
    assert detail["payment_request"] == created["payment_request"]
    assert [(t["from"], t["to"]) for t in detail["transitions"]] == [(None, "receiving")]
    assert detail["transitions"][0]["at"].endswith("Z")
    assert detail["next_poll_at"] is not None
    assert "last_poll_at" in detail
    assert "last_error" in detail
    # Issue 13: Voltage's times came as +00:00 beside our own Z ones.
    times = {k: v for k, v in detail.items() if k.endswith("_at") and v is not None}
    assert {"created_at", "updated_at", "expires_at", "watched_at"} <= set(times)
    assert all(v.endswith("Z") and "+" not in v for v in times.values()), times

    any_amount = ok(api.post("/v1/payments", {"amount_msats": None}), 201)
    assert any_amount["amount_msats"] in (None, 0)
    third = ok(api.post("/v1/payments", {"amount_msats": 3}), 201)

    listed = ok(api.get("/v1/payments"))
    assert [p["id"] for p in listed["items"]] == [third["id"], any_amount["id"], payment_id]
    assert listed["next_cursor"] is None
    page1 = ok(api.get("/v1/payments", params={"limit": 2}))
    assert [p["id"] for p in page1["items"]] == [third["id"], any_amount["id"]]
    page2 = ok(api.get("/v1/payments", params={"limit": 2, "cursor": page1["next_cursor"]}))
    assert [p["id"] for p in page2["items"]] == [payment_id]
    assert page2["next_cursor"] is None

    sim_control.settle(payment_id)
    stack_poll = ok(api.get("/v1/payments", params={"status": "completed"}))
    assert stack_poll["items"] == []  # nothing polled it yet: no worker in this test
    assert len(ok(api.get("/v1/payments", params={"status": "receiving"}))["items"]) == 3
    assert len(ok(api.get("/v1/payments", params={"watching": "false"}))["items"]) == 0

    error_of(api.get(f"/v1/payments/{uuid.uuid4()}"), 404, "not_found")
    error = error_of(api.get("/v1/payments/does-not-exist"), 422, "validation_error")
    assert fields_of(error) == ["path.payment_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.amount_msats"),
        ({"amount_msats": -1}, "body.amount_msats"),
        ({"amount_msats": "lots"}, "body.amount_msats"),
        ({"amount_msats": 1, "expiration": 0}, "body.expiration"),
        ({"amount_msats": 1, "expiration": 86_401}, "body.expiration"),
        ({"amount_msats": 1, "metadata": {f"k{i}": "v" for i in range(51)}}, "body.metadata"),
        ({"amount_msats": 1, "metadata": {"k": "v" * 257}}, "body.metadata.k"),
        ({"amount_msats": 1, "metadata": {"k": 1}}, "body.metadata.k"),
        ({"amount_msats": 1, "description": "d" * 640}, "body.description"),
        ({"amount_msats": 1, "client_id": ""}, "body.client_id"),
        ({"amount_msats": 1, "wallet_id": ""}, "body.wallet_id"),
        ({"amount_msats": 1, "colour": "red"}, "body.colour"),
    ],
)
def test_create_validation_names_the_field_and_calls_nobody(
    api: ApiClient, sim_control: SimControl, body: dict[str, Any], field: str
) -> None:
    before = create_count(sim_control)
    error = error_of(api.post("/v1/payments", body), 422, "validation_error")
    assert field in fields_of(error), error
    assert field in error["detail"]
    assert create_count(sim_control) == before


def test_list_query_validation(api: ApiClient) -> None:
    for params, field in (
        ({"status": "paid"}, "query.status"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"cursor": "garbage!"}, "query.cursor"),
        ({"watching": "perhaps"}, "query.watching"),
    ):
        assert field in fields_of(error_of(api.get("/v1/payments", params=params), 422))


def test_unknown_query_parameters_are_named_not_ignored(api: ApiClient) -> None:
    error = error_of(api.get("/v1/payments", params={"stauts": "completed"}), 422)
    assert fields_of(error) == ["query.stauts"]
    assert "status" in error["detail"]
    error = error_of(api.get("/v1/deliveries", params={"": "x", "limit": 1}), 422)
    assert fields_of(error) == ["query."]
    error = error_of(
        api.get("/v1/deliveries", params=[("status", "dead"), ("status", "failed")]), 422
    )
    assert fields_of(error) == ["query.status"]
    ok(api.get("/healthz", params={"probe": "1"}))  # health answers whatever the query


def test_logs_carry_ids_and_never_tokens_or_secrets(
    api: ApiClient, receivers: Callable[[], Receiver]
) -> None:
    with capture_logs() as logs:
        sub = ok(api.post("/v1/subscriptions", {"url": receivers().url()}), 201)
        rotated = ok(api.post(f"/v1/subscriptions/{sub['id']}/rotate-secret"))
        payment = ok(api.post("/v1/payments", {"amount_msats": 1_000}), 201)
        error_of(api.get("/v1/payments", token=TOKEN + "x"), 401)
        error_of(api.post("/v1/payments", {"amount_msats": 1}, token=OTHER_TOKEN[:-1]), 401)
    text = repr(logs)
    for secret in (TOKEN, OTHER_TOKEN, sub["secret"], rotated["secret"]):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
    assert any(entry.get("subscription_id") == sub["id"] for entry in logs)
    assert any(entry.get("payment_id") == payment["id"] for entry in logs)


def test_idempotent_create_with_client_id_makes_one_invoice(
    api: ApiClient, sim_control: SimControl
) -> None:
    body = {"amount_msats": 5_000, "description": "once", "client_id": f"order-{uuid.uuid4()}"}
    before = create_count(sim_control)
    first = ok(api.post("/v1/payments", body), 201)
    again = ok(api.post("/v1/payments", body), 200)
    assert again["id"] == first["id"]
    assert again["payment_request"] == first["payment_request"]
    assert create_count(sim_control) == before + 1
    assert len(ok(api.get("/v1/payments"))["items"]) == 1


@pytest.fixture
def slow_voltage(sim_control: SimControl) -> Iterator[None]:
    original = sim_control.call("GET", "/config")["generating_delay"]
    sim_control.call("PATCH", "/config", {"generating_delay": 3.0})
    try:
        yield
    finally:
        sim_control.call("PATCH", "/config", {"generating_delay": original})


def test_slow_invoice_answers_202_and_the_watch_goes_on(
    make_stack: Callable[..., Stack], sim_control: SimControl, slow_voltage: None
) -> None:
    stack = api_stack(make_stack)
    with serve(stack, invoice_wait=0.3) as api:
        started = time.monotonic()
        response = api.post("/v1/payments", {"amount_msats": 7_000, "client_id": "slow-1"})
        pending = ok(response, 202)
        assert time.monotonic() - started < 2.5
        assert pending["status"] == "generating"
        assert pending["payment_request"] is None
        assert pending["watching"] is True
        # A repeat while the invoice is still unknown: the same payment, still 202.
        assert (
            ok(api.post("/v1/payments", {"amount_msats": 7_000, "client_id": "slow-1"}), 202)["id"]
            == pending["id"]
        )
        assert stack.runtime.payments.next_poll_at(pending["id"]) is not None


def test_voltage_failures_map_to_clean_answers(api: ApiClient, clean_faults: SimControl) -> None:
    sim = clean_faults
    sim.fault(kind="status", status=401, method="POST", path="/payments", count=1)
    error = error_of(api.post("/v1/payments", {"amount_msats": 1}), 502, "voltage_auth_error")
    assert "VOLTAGE_API_KEY" in error["detail"]

    sim.fault(kind="rate_limit", method="POST", path="/payments", retry_after=30, count=1)
    response = api.post("/v1/payments", {"amount_msats": 1})
    error_of(response, 503, "voltage_unavailable")
    assert response.headers["retry-after"] == "30"

    # Voltage refusing a create it was sent is a 422 too (what it would refuse for a field
    # the watcher knows, such as a description of 800 bytes, is refused before it is sent:
    # tests/test_create_limits.py).
    sim.fault(kind="status", status=422, method="POST", path="/payments", count=1)
    error_of(api.post("/v1/payments", {"amount_msats": 1}), 422, "voltage_invalid_request")
    assert ok(api.get("/v1/payments"))["items"] == []


def test_watch_an_existing_payment(api: ApiClient, stack: Stack, sim_control: SimControl) -> None:
    voltage = stack.runtime.voltage
    elsewhere = voltage.create_receive(wallet_id="wallet-test", amount_msats=9_000)
    first = ok(api.post("/v1/watches", {"payment_id": elsewhere.id}), 201)
    assert first["id"] == elsewhere.id
    assert first["source"] == "watched"
    assert first["payment_request"] == elsewhere.payment_request
    again = ok(api.post("/v1/watches", {"payment_id": elsewhere.id}), 200)
    assert again["id"] == elsewhere.id

    # Already final when adopted: the event exists at once.
    done = voltage.create_receive(wallet_id="wallet-test", amount_msats=1_000)
    sim_control.settle(done.id)
    adopted = ok(api.post("/v1/watches", {"payment_id": done.id}), 201)
    assert adopted["status"] == "completed"
    assert adopted["watching"] is False
    events = ok(api.get("/v1/events", params={"payment_id": done.id}))["items"]
    assert [e["type"] for e in events] == ["payment.completed"]

    unknown = str(uuid.uuid4())
    error = error_of(api.post("/v1/watches", {"payment_id": unknown}), 404, "not_found")
    assert error["detail"].startswith("Voltage has no payment")
    assert unknown in error["detail"]
    error = error_of(api.post("/v1/watches", {"payment_id": "not a uuid"}), 422)
    assert fields_of(error) == ["body.payment_id"]
    # Any spelling of the UUID is the same payment.
    assert ok(api.post("/v1/watches", {"payment_id": elsewhere.id.upper()}), 200)["id"] == (
        elsewhere.id
    )
    assert fields_of(error_of(api.post("/v1/watches", {}), 422)) == ["body.payment_id"]
    assert fields_of(error_of(api.post("/v1/watches", {"payment_id": ""}), 422)) == [
        "body.payment_id"
    ]


# --- subscriptions -------------------------------------------------------------------------


def test_subscription_lifecycle(api: ApiClient, receivers: Callable[[], Receiver]) -> None:
    receiver = receivers()
    created = ok(
        api.post(
            "/v1/subscriptions",
            {
                "url": receiver.url(),
                "event_types": ["payment.completed"],
                "filters": {"wallet_id": "wallet-test", "metadata": {"shop": "a"}},
                "description": "shop a",
            },
        ),
        201,
    )
    sub_id = created["id"]
    assert created["secret"].startswith("whsec_")
    assert created["filters"] == {"wallet_id": "wallet-test", "metadata": {"shop": "a"}}
    assert created["enabled"] is True

    shown = ok(api.get(f"/v1/subscriptions/{sub_id}"))
    assert "secret" not in shown
    assert created["secret"] not in json.dumps(shown)
    assert shown["url"] == receiver.url()

    second = ok(api.post("/v1/subscriptions", {"url": receiver.url("/other")}), 201)
    listed = ok(api.get("/v1/subscriptions"))
    assert [s["id"] for s in listed["items"]] == [sub_id, second["id"]]
    assert all("secret" not in s for s in listed["items"])
    page = ok(api.get("/v1/subscriptions", params={"limit": 1}))
    assert [s["id"] for s in page["items"]] == [sub_id]
    rest = ok(api.get("/v1/subscriptions", params={"limit": 1, "cursor": page["next_cursor"]}))
    assert [s["id"] for s in rest["items"]] == [second["id"]]
    assert rest["next_cursor"] is None

    patched = ok(
        api.patch(
            f"/v1/subscriptions/{sub_id}",
            {"enabled": False, "description": None, "filters": {"wallet_id": None}},
        )
    )
    assert patched["enabled"] is False
    assert patched["disabled_reason"]
    assert patched["description"] is None
    assert patched["filters"] == {"wallet_id": None, "metadata": {"shop": "a"}}
    assert ok(api.get("/v1/subscriptions", params={"enabled": "false"}))["items"][0]["id"] == sub_id
    error_of(api.post(f"/v1/subscriptions/{sub_id}/test"), 409, "subscription_disabled")
    patched = ok(
        api.patch(
            f"/v1/subscriptions/{sub_id}", {"enabled": True, "event_types": ["payment.failed"]}
        )
    )
    assert patched["enabled"] is True
    assert patched["disabled_reason"] is None
    assert patched["event_types"] == ["payment.failed"]

    rotated = ok(api.post(f"/v1/subscriptions/{sub_id}/rotate-secret"))
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert rotated["previous_secrets_expire_at"].endswith("Z")

    assert api.delete(f"/v1/subscriptions/{sub_id}").status_code == 204
    error_of(api.get(f"/v1/subscriptions/{sub_id}"), 404, "not_found")
    error_of(api.delete(f"/v1/subscriptions/{sub_id}"), 404, "not_found")
    for method, path, body in (
        ("PATCH", f"/v1/subscriptions/{sub_id}", {"enabled": True}),
        ("POST", f"/v1/subscriptions/{sub_id}/rotate-secret", None),
        ("POST", f"/v1/subscriptions/{sub_id}/test", None),
        (
            "POST",
            f"/v1/subscriptions/{sub_id}/recover",
            {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
        ),
    ):
        error_of(api.call(method, path, body), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.url"),
        ({"url": "ftp://example.com/hook"}, "body.url"),
        ({"url": "http://user:pw@127.0.0.1/hook"}, "body.url"),
        ({"url": "http://no-such-host.invalid/hook"}, "body.url"),
        ({"url": "http://127.0.0.1:9/h", "event_types": ["payment.lost"]}, "body.event_types.0"),
        ({"url": "http://127.0.0.1:9/h", "event_types": []}, "body.event_types"),
        (
            {"url": "http://127.0.0.1:9/h", "filters": {"metadata": {"k": 1}}},
            "body.filters.metadata.k",
        ),
        ({"url": "http://127.0.0.1:9/h", "filters": {"colour": "red"}}, "body.filters.colour"),
        ({"url": "http://127.0.0.1:9/h", "description": "d" * 501}, "body.description"),
        ({"url": "http://127.0.0.1:9/h", "enabled": "sometimes"}, "body.enabled"),
    ],
)
def test_subscription_validation_names_the_field(
    api: ApiClient, stack: Stack, body: dict[str, Any], field: str
) -> None:
    error = error_of(api.post("/v1/subscriptions", body), 422, "validation_error")
    assert field in fields_of(error), error
    assert stack.runtime.subscriptions.page() == []


def test_subscription_patch_validation(api: ApiClient) -> None:
    sub = ok(api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/h"}), 201)
    path = f"/v1/subscriptions/{sub['id']}"
    for body, field in (
        ({"url": None}, "body.url"),
        ({"url": "gopher://x"}, "body.url"),
        ({"enabled": None}, "body.enabled"),
        ({"event_types": ["nope"]}, "body.event_types.0"),
        ({"filters": None}, "body.filters"),
    ):
        assert field in fields_of(error_of(api.patch(path, body), 422)), body
    assert ok(api.get(path))["url"] == "http://127.0.0.1:9/h"


def test_private_addresses_are_refused_unless_allowed(
    make_stack: Callable[..., Stack],
) -> None:
    stack = api_stack(make_stack, WATCHER_WEBHOOK_ALLOW_PRIVATE="false")
    with serve(stack) as api:
        for url in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://[::1]/hook"):
            error = error_of(api.post("/v1/subscriptions", {"url": url}), 422)
            assert fields_of(error) == ["body.url"]
            assert "WATCHER_WEBHOOK_ALLOW_PRIVATE" in error["detail"]


def test_recover_validation(api: ApiClient) -> None:
    sub = ok(api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/h"}), 201)
    path = f"/v1/subscriptions/{sub['id']}/recover"
    day = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
    for body, field in (
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "body.until"),
        ({"since": "2026-01-01T00:00:00", "until": "2026-01-02T00:00:00Z"}, "body.since"),
        ({"since": "yesterday", "until": "2026-01-02T00:00:00Z"}, "body.since"),
        ({"since": "2026-01-01T00:00:00Z"}, "body.until"),
        ({**day, "statuses": ["succeeded"]}, "body.statuses.0"),
        ({**day, "statuses": []}, "body.statuses"),
        ({**day, "event_types": ["payment.paid"]}, "body.event_types.0"),
        ({**day, "dry_run": "yes"}, "body.dry_run"),
    ):
        assert field in fields_of(error_of(api.post(path, body), 422)), body
    nothing = ok(
        api.post(path, {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00+01:00"}), 202
    )
    assert nothing == {
        "subscription_id": sub["id"],
        "dry_run": False,
        "count": 0,
        "by_status": {"failed": 0, "dead": 0},
        "delivery_ids": [],
    }


# --- deliveries and events -------------------------------------------------------------------


def test_deliveries_and_events_not_found_and_query_validation(api: ApiClient) -> None:
    unknown = "dlv_" + "0" * 24
    error_of(api.get(f"/v1/deliveries/{unknown}"), 404, "not_found")
    error_of(api.post(f"/v1/deliveries/{unknown}/redeliver"), 404, "not_found")
    error = error_of(api.get("/v1/deliveries/dlv_nope"), 422, "validation_error")
    assert fields_of(error) == ["path.delivery_id"]
    assert ok(api.get("/v1/deliveries")) == {"items": [], "next_cursor": None}
    assert ok(api.get("/v1/events")) == {"items": [], "next_cursor": None}
    for path, params, field in (
        ("/v1/deliveries", {"status": "lost"}, "query.status"),
        ("/v1/deliveries", {"cursor": "%%%"}, "query.cursor"),
        ("/v1/events", {"type": "payment.lost"}, "query.type"),
        ("/v1/events", {"since": "last week"}, "query.since"),
        ("/v1/events", {"since": "2026-01-01T00:00:00"}, "query.since"),
        (
            "/v1/events",
            {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "query.until",
        ),
        ("/v1/events", {"cursor": "abc"}, "query.cursor"),
        ("/v1/events", {"order": "sideways"}, "query.order"),
    ):
        assert field in fields_of(error_of(api.get(path, params=params), 422)), (path, params)


def test_events_filter_and_page_over_the_outbox(api: ApiClient, stack: Stack) -> None:
    rt = stack.runtime
    sub, _ = rt.subscriptions.create(url="http://127.0.0.1:9/h")
    ids = [rt.deliveries.add_test_event(sub.id).event_id for _ in range(5)]
    everything = ok(api.get("/v1/events"))
    assert [e["id"] for e in everything["items"]] == ids
    first = everything["items"][0]
    assert first["type"] == "webhook.test"
    assert first["subscription_id"] == sub.id
    assert first["payment_id"] is None
    assert first["body"]["type"] == "webhook.test"
    assert first["created_at"].endswith("Z")

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = ok(api.get("/v1/events", params=params))
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    newest = ok(api.get("/v1/events", params={"order": "desc", "limit": 2}))
    assert [e["id"] for e in newest["items"]] == ids[::-1][:2]
    assert ok(api.get("/v1/events", params={"type": "payment.completed"}))["items"] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert ok(api.get("/v1/events", params={"since": future}))["items"] == []
    assert len(ok(api.get("/v1/events", params={"since": past, "until": future}))["items"]) == 5


def test_over_http_only_a_settled_payment_reaches_a_verified_subscriber(
    make_stack: Callable[..., Stack],
    sim_control: SimControl,
    receivers: Callable[[], Receiver],
) -> None:
    """The whole path through the API alone: subscribe, create, (Voltage settles), receive a
    verified webhook, then find the delivery with its attempts and the event by id."""
    stack = api_stack(make_stack)
    stack.start_worker(concurrency=4)
    stack.start_beat()
    receiver = receivers()
    with serve(stack) as api:
        sub = ok(api.post("/v1/subscriptions", {"url": receiver.url()}), 201)
        payment = ok(
            api.post("/v1/payments", {"amount_msats": 42_000, "metadata": {"order": "e2e"}}),
            201,
        )
        sim_control.settle(payment["id"])

        wait_until(lambda: receiver.received, timeout=30, message="the webhook")
        (got,) = receiver.received
        body = Webhook(sub["secret"]).verify(got.body, got.headers)
        assert body["type"] == "payment.completed"
        assert body["data"]["payment_id"] == payment["id"]
        assert body["data"]["payment"]["data"]["payment_request"] == payment["payment_request"]
        webhook_id = got.headers["webhook-id"]

        def delivered() -> Any:
            items = ok(api.get("/v1/deliveries", params={"subscription_id": sub["id"]}))["items"]
            return items if items and items[0]["status"] == "succeeded" else None

        (delivery,) = wait_until(delivered, message="the delivery marked succeeded")
        assert delivery["event_id"] == webhook_id
        assert delivery["payment_id"] == payment["id"]
        detail = ok(api.get(f"/v1/deliveries/{delivery['id']}"))
        assert [a["status_code"] for a in detail["attempt_log"]] == [200]
        assert detail["attempt_log"][0]["latency_ms"] > 0
        by_event = ok(api.get("/v1/deliveries", params={"event_id": webhook_id}))["items"]
        assert [d["id"] for d in by_event] == [delivery["id"]]
        assert ok(api.get("/v1/deliveries", params={"status": "dead"}))["items"] == []

        events = ok(api.get("/v1/events", params={"payment_id": payment["id"]}))["items"]
        assert [(e["id"], e["type"]) for e in events] == [(webhook_id, "payment.completed")]
        assert events[0]["body"] == body
        final = ok(api.get(f"/v1/payments/{payment['id']}"))
        assert final["status"] == "completed"
        assert final["event_id"] == webhook_id
        assert [t["to"] for t in final["transitions"]] == ["receiving", "completed"]

        # A manual re-send: same event, same webhook-id, a second attempt in the log.
        resent = ok(api.post(f"/v1/deliveries/{delivery['id']}/redeliver"), 202)
        assert resent["status"] == "pending"
        wait_until(lambda: len(receiver.received) == 2, timeout=30, message="the re-send")
        assert receiver.received[1].headers["webhook-id"] == webhook_id
        wait_until(
            lambda: len(ok(api.get(f"/v1/deliveries/{delivery['id']}"))["attempt_log"]) == 2,
            message="the second attempt logged",
        )

        # A test event, delivered and signed like any other.
        test = ok(api.post(f"/v1/subscriptions/{sub['id']}/test"), 202)
        assert ok(api.get(f"/v1/deliveries/{test['delivery_id']}"))["event_id"] == test["event_id"]
        wait_until(lambda: len(receiver.received) == 3, timeout=30, message="the test event")
        test_body = Webhook(sub["secret"]).verify(
            receiver.received[2].body, receiver.received[2].headers
        )
        assert test_body["type"] == "webhook.test"
        assert receiver.received[2].headers["webhook-id"] == test["event_id"]


def test_the_api_hands_deliveries_to_the_workers_itself(
    make_stack: Callable[..., Stack], receivers: Callable[[], Receiver]
) -> None:
    """No beat here: only the API's own hand-off can get the test event and the re-send
    to the worker."""
    stack = api_stack(make_stack)
    stack.start_worker(concurrency=2)
    receiver = receivers()
    with serve(stack) as api:
        sub = ok(api.post("/v1/subscriptions", {"url": receiver.url()}), 201)
        test = ok(api.post(f"/v1/subscriptions/{sub['id']}/test"), 202)
        wait_until(lambda: receiver.received, timeout=30, message="the test event")
        assert receiver.received[0].headers["webhook-id"] == test["event_id"]
        Webhook(sub["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
        wait_until(
            lambda: ok(api.get(f"/v1/deliveries/{test['delivery_id']}"))["status"] == "succeeded",
            message="the delivery marked succeeded",
        )
        ok(api.post(f"/v1/deliveries/{test['delivery_id']}/redeliver"), 202)
        wait_until(lambda: len(receiver.received) == 2, timeout=30, message="the re-send")
        assert (
            ok(api.get("/v1/events", params={"type": "webhook.test"}))["items"][0]["id"]
            == (test["event_id"])
        )


def test_recover_resends_dead_deliveries_in_a_time_range(
    make_stack: Callable[..., Stack],
    sim_control: SimControl,
    receivers: Callable[[], Receiver],
) -> None:
    stack = api_stack(make_stack)
    stack.start_worker(concurrency=4)
    stack.start_beat()
    receiver = receivers()
    receiver.default = Answer(status=503, body=b"down")
    with serve(stack) as api:
        sub = ok(api.post("/v1/subscriptions", {"url": receiver.url()}), 201)
        since = datetime.now(UTC) - timedelta(seconds=5)
        payment = ok(api.post("/v1/payments", {"amount_msats": 1_000}), 201)
        sim_control.settle(payment["id"])

        def dead() -> Any:
            params = {"subscription_id": sub["id"], "status": "dead"}
            return ok(api.get("/v1/deliveries", params=params))["items"]

        (delivery,) = wait_until(dead, timeout=30, message="a dead letter")
        detail = ok(api.get(f"/v1/deliveries/{delivery['id']}"))
        assert [a["status_code"] for a in detail["attempt_log"]] == [503, 503]
        assert detail["attempt_log"][0]["response_body"] == "down"

        receiver.default = Answer(status=200)
        until = datetime.now(UTC) + timedelta(seconds=5)
        path = f"/v1/subscriptions/{sub['id']}/recover"
        window = {"since": since.isoformat(), "until": until.isoformat()}
        counted = ok(api.post(path, {**window, "dry_run": True}), 200)
        assert (counted["dry_run"], counted["count"]) == (True, 1)
        assert counted["by_status"] == {"failed": 0, "dead": 1}
        assert ok(api.get(f"/v1/deliveries/{delivery['id']}"))["status"] == "dead"  # unsent
        other = ok(api.post(path, {**window, "dry_run": True, "event_types": ["payment.failed"]}))
        assert other["count"] == 0
        result = ok(api.post(path, {**window, "statuses": ["dead"]}), 202)
        assert result == {
            "subscription_id": sub["id"],
            "dry_run": False,
            "count": 1,
            "by_status": {"failed": 0, "dead": 1},
            "delivery_ids": [delivery["id"]],
        }

        def succeeded() -> Any:
            found = ok(api.get(f"/v1/deliveries/{delivery['id']}"))
            return found if found["status"] == "succeeded" else None

        final = wait_until(succeeded, timeout=30, message="the recovered delivery")
        assert [a["status_code"] for a in final["attempt_log"]] == [503, 503, 200]
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
