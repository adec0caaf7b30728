"""The Voltage client: pure request building and retry rules, a few canned transports for the
cases a server cannot easily produce, and real HTTP over loopback against the simulator."""

from __future__ import annotations

import json
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from requests.adapters import BaseAdapter
from structlog.testing import capture_logs

import watcher
from watcher.settings import ConfigError, Settings
from watcher.simulator import SimulatorConfig
from watcher.simulator.server import SimulatorServer
from watcher.timing import parse_retry_after, rfc3339_utc
from watcher.voltage.client import VoltageClient
from watcher.voltage.errors import (
    InvoiceNotReady,
    VoltageAuthError,
    VoltageConflict,
    VoltageError,
    VoltageInvalidRequest,
    VoltageMalformedResponse,
    VoltageNotFound,
    VoltageTransientError,
)
from watcher.voltage.filters import build_list_params
from watcher.voltage.models import PaymentList, PaymentStatus
from watcher.voltage.receive import build_receive_body
from watcher.voltage.retry import RetryPolicy

SECRET = "vw-test-secret-8d1c2f7e"  # distinctive, so a leak is easy to grep for
READ_ONLY = "read-key"
ORG = "4b7e2d7e-5f6b-4a53-9d50-8f5f1c1f0a11"
ENV = "0d0f5d9a-3c0e-4f63-8a3c-1b2d9f3e7c22"
WALLET = "7a68a525-9d11-4c1e-a3dd-1c2bf1378ba2"


# --- helpers -----------------------------------------------------------------------------------


class FakeTime:
    """A virtual clock: `sleep` records the delay and moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def policy(self, budget: float = 2.0, **kwargs: Any) -> RetryPolicy:
        return RetryPolicy(budget=budget, sleep=self.sleep, clock=self.clock, **kwargs)


def assert_no_secret(obj: Any, secret: str = SECRET) -> None:
    """The key must not appear anywhere an exception (or its chain) can be rendered."""
    seen: set[int] = set()
    current: Any = obj
    while isinstance(current, BaseException) and id(current) not in seen:
        seen.add(id(current))
        texts = [str(current), repr(current), repr(current.args), repr(vars(current))]
        for text in texts:
            assert secret not in text, text
        current = current.__cause__ or current.__context__
    if not isinstance(obj, BaseException):
        assert secret not in str(obj)
        assert secret not in repr(obj)


def assert_logs_clean(logs: list[MutableMapping[str, Any]], secret: str = SECRET) -> None:
    for entry in logs:
        assert secret not in repr(entry), entry


# --- retry policy (pure) -------------------------------------------------------------------------


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError, match="budget"):
        RetryPolicy(budget=-1)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=0)
    with pytest.raises(ValueError, match="max_delay"):
        RetryPolicy(base_delay=2, max_delay=1)
    assert RetryPolicy() == RetryPolicy(sleep=lambda _s: None)  # injectables don't compare
    assert "sleep" not in repr(RetryPolicy())


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=10),
    spread=st.floats(min_value=1, max_value=100),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_full_jitter_within_the_cap(
    attempt: int, base: float, spread: float, draw: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=base * spread, random=lambda: draw)
    ceiling = min(base * spread, base * 2 ** min(attempt - 1, 60))
    assert 0 <= policy.backoff(attempt) <= ceiling * (1 + 1e-9)


def test_backoff_grows_then_caps() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0, random=lambda: 0.999999)
    ceilings = [round(policy.backoff(n), 3) for n in range(1, 8)]
    assert ceilings == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_parse_retry_after_forms() -> None:
    h = requests.structures.CaseInsensitiveDict
    assert parse_retry_after(h({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(h({"retry-after": " 1.5 "})) == 1.5
    assert parse_retry_after(h({"X-Retry-After-Ms": "250"})) == 0.25
    # milliseconds win over seconds when both are there
    assert parse_retry_after(h({"Retry-After": "7", "x-retry-after-ms": "300"})) == 0.3
    # a nonsense ms header falls back to Retry-After
    assert parse_retry_after(h({"Retry-After": "2", "x-retry-after-ms": "soon"})) == 2.0
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(h({"Retry-After": later}), now=now.timestamp()) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(h({"Retry-After": earlier}), now=now.timestamp()) == 0.0
    asctime = "Thu Jan  1 12:00:30 2026"
    assert parse_retry_after(h({"Retry-After": asctime}), now=now.timestamp()) == 30.0
    for junk in ("", "soon", "-5", "nan", "inf"):
        assert parse_retry_after(h({"Retry-After": junk})) is None
    assert parse_retry_after(h({})) is None


def test_next_delay_rules() -> None:
    policy = RetryPolicy(budget=10, base_delay=1, max_delay=4, random=lambda: 0.5)
    transient = VoltageTransientError("x", status=503)
    assert policy.next_delay(transient, attempt=1, elapsed=0) == 0.5
    assert policy.next_delay(transient, attempt=3, elapsed=0) == 2.0
    assert policy.next_delay(transient, attempt=3, elapsed=9) is None  # would overrun
    assert policy.next_delay(VoltageAuthError("x", status=401), attempt=1, elapsed=0) is None
    asked = VoltageTransientError("x", status=429, retry_after=6)
    assert policy.next_delay(asked, attempt=1, elapsed=0) == 6  # above max_delay, within budget
    assert policy.next_delay(asked, attempt=1, elapsed=5) is None  # more than what is left
    assert RetryPolicy(budget=0).next_delay(transient, attempt=1, elapsed=0) is None


# --- request building (pure) ---------------------------------------------------------------------


def test_receive_body_is_exactly_what_voltage_wants() -> None:
    pid = "11ca843c-bdaa-44b6-965a-39ac550fcdf3"
    body = build_receive_body(
        wallet_id=WALLET,
        amount_msats=150_000,
        description="Order 123",
        expiration=3600,
        metadata={"external_id": "order-123"},
        payment_id=pid,
    )
    assert body == {
        "id": pid,
        "wallet_id": WALLET,
        "payment_kind": "bolt11",
        "amount": {"amount": 150_000, "currency": "btc"},
        "currency": "btc",
        "description": "Order 123",
        "expiration": 3600,
        "metadata": {"external_id": "order-123"},
    }
    any_amount = build_receive_body(wallet_id=WALLET, amount_msats=None)
    assert "amount" not in any_amount
    assert "amount_msats" not in any_amount
    assert any_amount["currency"] == "btc"
    assert str(uuid.UUID(any_amount["id"])) == any_amount["id"]
    assert any_amount["id"] != build_receive_body(wallet_id=WALLET, amount_msats=None)["id"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"amount_msats": -1}, "amount_msats"),
        ({"amount_msats": True}, "amount_msats"),
        ({"amount_msats": 1.5}, "amount_msats"),
        ({"expiration": 0}, "expiration"),
        ({"expiration": 86_401}, "expiration"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"metadata": {"k" * 257: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 257}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"payment_id": "order-123"}, "payment_id"),
        ({"wallet_id": ""}, "wallet_id"),
    ],
)
def test_receive_input_is_validated_before_any_request(kwargs: dict[str, Any], name: str) -> None:
    args: dict[str, Any] = {"wallet_id": WALLET, "amount_msats": 1000, **kwargs}
    client = VoltageClient(
        base_url="http://127.0.0.1:9/v1", api_key=SECRET, organization_id=ORG, environment_id=ENV
    )
    with client, pytest.raises(ValueError, match=name):
        client.submit_receive(**args)
    assert client.request_count == 0


def test_receive_limits_are_inclusive() -> None:
    body = build_receive_body(
        wallet_id=WALLET,
        amount_msats=0,
        expiration=86_400,
        metadata={f"k{i}": "v" * 256 for i in range(50)},
    )
    assert body["expiration"] == 86_400
    assert len(body["metadata"]) == 50
    assert build_receive_body(wallet_id=WALLET, amount_msats=1, expiration=1)["expiration"] == 1


def test_list_params() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    first = build_list_params(
        limit=10,
        statuses=["completed", PaymentStatus.FAILED],
        direction="receive",
        sort_key="created_at",
        sort_order="ASC",
        start_date=start,
        metadata={"external_id": "a b"},
    )
    assert first == [
        ("pagination", "cursor"),
        ("limit", "10"),
        ("direction", "receive"),
        ("sort_key", "created_at"),
        ("sort_order", "ASC"),
        ("statuses[]", "completed"),
        ("statuses[]", "failed"),
        ("start_date", "2026-01-02T01:04:05Z"),
        ("metadata[external_id]", "a b"),
    ]
    later = build_list_params(cursor="abc", limit=10, statuses="completed")
    assert later[:2] == [("cursor", "abc"), ("limit", "10")]
    assert ("pagination", "cursor") not in later
    assert ("statuses[]", "completed") in later
    with pytest.raises(ValueError, match="limit"):
        build_list_params(limit=0)
    with pytest.raises(ValueError, match="start_date"):
        build_list_params(start_date=datetime(2026, 1, 1))
    assert rfc3339_utc(datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC)) == (
        "2026-01-01T00:00:00.123000Z"
    )


def test_client_constructor_validates_and_hides_the_key() -> None:
    with pytest.raises(ValueError, match="base_url"):
        VoltageClient(base_url="ftp://x", api_key=SECRET, organization_id=ORG, environment_id=ENV)
    with pytest.raises(ValueError, match="api_key"):
        VoltageClient(base_url="http://x/v1", api_key="", organization_id=ORG, environment_id=ENV)
    with pytest.raises(ValueError, match="read_timeout"):
        VoltageClient(
            base_url="http://x/v1",
            api_key=SECRET,
            organization_id=ORG,
            environment_id=ENV,
            read_timeout=0,
        )
    client = VoltageClient(
        base_url="http://x/v1/", api_key=SecretStr(SECRET), organization_id=ORG, environment_id=ENV
    )
    assert client.base_url == "http://x/v1"
    assert_no_secret(client)
    assert SECRET not in repr(vars(client))
    with pytest.raises(TypeError):
        pickle.dumps(client)
    client.close()


def test_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        voltage_api_url="http://127.0.0.1:9/v1/",
        voltage_api_key=SecretStr(SECRET),
        voltage_organization_id=ORG,
        voltage_environment_id=ENV,
        voltage_wallet_id=WALLET,
        voltage_read_timeout=4.0,
        voltage_retry_budget=3.0,
    )
    with VoltageClient.from_settings(settings) as client:
        assert client.base_url == "http://127.0.0.1:9/v1"
        assert client.timeout == (3.05, 4.0)
        assert client.retry.budget == 3.0
        assert_no_secret(client)
    bare = Settings(_env_file=None, voltage_api_key=None)
    with pytest.raises(ConfigError, match="VOLTAGE_API_KEY"):
        VoltageClient.from_settings(bare)


def test_errors_survive_pickling() -> None:
    error = InvoiceNotReady("p1", "generating", waited=1.0, retry_after=2.0)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert isinstance(copy, InvoiceNotReady)
    assert (copy.payment_id, copy.last_status, copy.retry_after) == ("p1", "generating", 2.0)
    assert copy.retryable
    auth = pickle.loads(pickle.dumps(VoltageAuthError("no", status=401, type="wrong_credentials")))  # noqa: S301
    assert (auth.status, auth.type) == (401, "wrong_credentials")


# --- canned transports: what a real server rarely does on demand ---------------------------------


Answer = tuple[int, Mapping[str, str], bytes] | Exception


class CannedAdapter(BaseAdapter):
    """Answers from a list of (status, headers, body) or exceptions to raise; records what was
    sent. The last answer repeats."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.sent: list[requests.PreparedRequest] = []
        self.kwargs: list[MutableMapping[str, Any]] = []

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.sent.append(request)
        self.kwargs.append(kwargs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, headers, body = answer
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        response._content = body
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


def canned_client(
    answers: list[Answer],
    ft: FakeTime,
    budget: float = 2.0,
    policy: RetryPolicy | None = None,
) -> tuple[VoltageClient, CannedAdapter]:
    adapter = CannedAdapter(answers)
    session = requests.Session()
    session.mount("http://", adapter)
    client = VoltageClient(
        base_url="http://voltage.test/v1",
        api_key=SECRET,
        organization_id=ORG,
        environment_id=ENV,
        read_timeout=7.0,
        retry=policy or ft.policy(budget=budget),
        session=session,
    )
    return client, adapter


PAYMENT_JSON = json.dumps(
    {"id": "11ca843c-bdaa-44b6-965a-39ac550fcdf3", "status": "receiving", "data": {}}
).encode()


def test_headers_timeouts_and_no_redirects_on_every_call() -> None:
    client, adapter = canned_client([(200, {}, PAYMENT_JSON)], FakeTime())
    client.get_payment("11ca843c-bdaa-44b6-965a-39ac550fcdf3")
    sent = adapter.sent[0]
    assert sent.headers["x-api-key"] == SECRET
    assert sent.headers["User-Agent"] == f"voltage-watcher/{watcher.__version__}"
    assert sent.headers["Accept"] == "application/json"
    assert adapter.kwargs[0]["timeout"] == (3.05, 7.0)
    assert sent.url == (
        f"http://voltage.test/v1/organizations/{ORG}/environments/{ENV}/payments/"
        "11ca843c-bdaa-44b6-965a-39ac550fcdf3"
    )


def test_lost_202_then_409_is_success() -> None:
    # The first create reached Voltage but its answer was lost (read timeout); the retry with
    # the same id gets 409 payment_exists, which means the payment is there.
    ft = FakeTime()
    conflict = json.dumps(
        {"error": {"type": "payment_exists", "detail": "exists", "context": {"payment_id": "x"}}}
    ).encode()
    client, adapter = canned_client(
        [requests.ReadTimeout("lost"), (409, {}, conflict)], ft, budget=5.0
    )
    with capture_logs() as logs:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
    assert len(adapter.sent) == 2
    bodies = [json.loads(request.body or b"") for request in adapter.sent]
    assert bodies[0] == bodies[1]  # the very same create, same id
    assert bodies[0]["id"] == pid
    events = [e for e in logs if e["log_level"] != "debug"]
    assert [e["event"] for e in events] == ["voltage.retry", "voltage.create_exists"]
    assert events[0]["payment_id"] == pid
    assert_logs_clean(logs)

    other = json.dumps({"error": {"type": "something_else"}}).encode()
    client, _ = canned_client([(409, {}, other)], ft)
    with pytest.raises(VoltageConflict):
        client.submit_receive(wallet_id=WALLET, amount_msats=1000)


def test_payment_id_cannot_escape_the_path() -> None:
    client, adapter = canned_client([(200, {}, PAYMENT_JSON)], FakeTime())
    client.get_payment("../../x?y=1")
    assert str(adapter.sent[0].url).endswith("/payments/..%2F..%2Fx%3Fy%3D1")


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (401, VoltageAuthError),
        (403, VoltageAuthError),
        (404, VoltageNotFound),
        (409, VoltageConflict),
        (400, VoltageInvalidRequest),
        (413, VoltageInvalidRequest),
        (415, VoltageInvalidRequest),
        (422, VoltageInvalidRequest),
        (502, VoltageTransientError),
    ],
)
def test_non_json_error_bodies_still_map_to_typed_errors(
    status: int, error_class: type[VoltageError]
) -> None:
    ft = FakeTime()
    html = b"<html><body>Bad Gateway</body></html>"
    client, adapter = canned_client([(status, {"Content-Type": "text/html"}, html)], ft, budget=0)
    with pytest.raises(error_class) as info:
        client.get_payment("p1")
    assert type(info.value) is error_class
    assert info.value.status == status
    assert "/payments/p1" in str(info.value)
    assert len(adapter.sent) == 1


def test_echoed_key_is_scrubbed_from_error_details() -> None:
    body = json.dumps(
        {
            "error": {
                "type": "wrong_credentials",
                "detail": f"key {SECRET} is unknown",
                "context": {"key": SECRET},
            }
        }
    ).encode()
    client, _ = canned_client([(401, {}, body)], FakeTime())
    with pytest.raises(VoltageAuthError) as info:
        client.get_payment("p1")
    assert info.value.type == "wrong_credentials"
    assert "[redacted]" in str(info.value)
    assert_no_secret(info.value)


def test_redirects_are_not_followed() -> None:
    client, adapter = canned_client(
        [(301, {"Location": "https://elsewhere.example/v1/x"}, b"")], FakeTime()
    )
    with pytest.raises(VoltageError, match="redirect") as info:
        client.get_payment("p1")
    assert not info.value.retryable
    assert len(adapter.sent) == 1


def test_http_date_retry_after_from_a_response() -> None:
    ft = FakeTime()
    wall = datetime(2026, 1, 1, tzinfo=UTC)
    retry_at = format_datetime(wall + timedelta(seconds=12), usegmt=True)
    policy = ft.policy(budget=60, wall_clock=wall.timestamp)
    client, _ = canned_client(
        [(503, {"Retry-After": retry_at}, b""), (200, {}, PAYMENT_JSON)], ft, policy=policy
    )
    assert client.get_payment("p1").status == "receiving"
    assert ft.sleeps == [12.0]


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b"", b"[]", b'{"id": 5}', b'{"status": "completed"}'],
)
def test_malformed_2xx_is_retried_then_raised(body: bytes) -> None:
    ft = FakeTime()
    client, adapter = canned_client([(200, {}, body)], ft, budget=1.0)
    with pytest.raises(VoltageMalformedResponse) as info:
        client.get_payment("p1")
    assert info.value.retryable
    assert info.value.status == 200
    assert len(adapter.sent) > 1  # retried within the budget
    assert sum(ft.sleeps) <= 1.0


def test_malformed_list_item_makes_the_page_malformed() -> None:
    good = {"id": "a", "status": "completed"}
    page = {"items": [good, {"status": "completed"}], "has_more": False, "limit": 10}
    with pytest.raises(VoltageMalformedResponse, match="item 1"):
        PaymentList.from_api(page)
    ok = PaymentList.from_api({"items": [good], "has_more": True, "next_cursor": "c1"})
    assert [p.id for p in ok.items] == ["a"]
    assert ok.next_cursor == "c1"
    assert ok.total is None


def test_connection_refused_is_transient_and_names_the_path() -> None:
    ft = FakeTime()
    # Nothing listens on port 9 (discard) on loopback: connection refused.
    client = VoltageClient(
        base_url="http://127.0.0.1:9/v1",
        api_key=SECRET,
        organization_id=ORG,
        environment_id=ENV,
        connect_timeout=0.5,
        retry=ft.policy(budget=1.0),
    )
    with capture_logs() as logs, pytest.raises(VoltageTransientError) as info:
        client.get_payment("p1")
    message = str(info.value)
    assert "connection error" in message or "timeout" in message
    assert "/payments/p1" in message
    assert "x-api-key" not in message.lower()
    assert client.request_count > 1
    assert_no_secret(info.value)
    assert_logs_clean(logs)
    assert any(entry["event"] == "voltage.retry" for entry in logs)
    retry_log = next(entry for entry in logs if entry["event"] == "voltage.retry")
    assert {"attempt", "delay", "status", "payment_id"} <= retry_log.keys()
    assert retry_log["payment_id"] == "p1"


# --- the simulator over real loopback HTTP -------------------------------------------------------


class Control:
    """The simulator's control surface."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.url + path, json=body, timeout=5)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def fault(self, kind: str, **fields: Any) -> None:
        self.call("POST", "/faults", {"kind": kind, **fields})

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.call("GET", "/stats")
        return stats

    def count(self, status: int) -> int:
        by_status: dict[str, int] = self.stats()["by_status"]
        return int(by_status.get(str(status), 0))

    def settle(self, payment_id: str) -> None:
        self.call("POST", f"/payments/{payment_id}/settle")

    def fail(self, payment_id: str) -> None:
        self.call("POST", f"/payments/{payment_id}/fail")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        api_keys={
            SECRET: frozenset({"read", "receive", "write"}),
            "sim-key": frozenset({"read", "receive", "write"}),
            READ_ONLY: frozenset({"read"}),
        },
        not_found_window=0.0,
        generating_delay=0.05,
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def ctl(sim: SimulatorServer) -> Iterator[Control]:
    control = Control(sim.control_url)
    control.call("POST", "/reset")
    control.call("DELETE", "/faults")
    control.call("PATCH", "/config", {"not_found_window": 0.0, "generating_delay": 0.05})
    control.call("POST", "/stats/reset")
    yield control
    control.call("DELETE", "/faults")
    control.http.close()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as captured:
        yield captured
    assert_logs_clean(captured)


def client_for(
    sim: SimulatorServer,
    *,
    key: str = SECRET,
    retry: RetryPolicy | None = None,
    read_timeout: float = 2.0,
    session: requests.Session | None = None,
) -> VoltageClient:
    return VoltageClient(
        base_url=sim.base_url,
        api_key=SecretStr(key),
        organization_id=ORG,
        environment_id=ENV,
        connect_timeout=1.0,
        read_timeout=read_timeout,
        retry=retry or RetryPolicy(budget=2.0, base_delay=0.01, max_delay=0.1),
        session=session,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_create_and_read_back(
    sim: SimulatorServer, ctl: Control, logs: list[MutableMapping[str, Any]]
) -> None:
    with client_for(sim) as client:
        payment = client.create_receive(
            wallet_id=WALLET,
            amount_msats=150_000,
            description="Order 123",
            expiration=600,
            metadata={"external_id": "order-123"},
            invoice_wait=5.0,
        )
        assert payment.status == PaymentStatus.RECEIVING
        assert payment.direction == "receive"
        assert payment.metadata == {"external_id": "order-123"}
        assert payment.raw["id"] == payment.id
        invoice = payment.invoice()
        assert invoice is not None
        assert invoice.payment_request.startswith("lntbs")
        assert invoice.amount_msat == 150_000
        assert invoice.expiry_seconds == 600
        assert invoice.description == "Order 123"
        assert len(invoice.payment_hash) == 64
        int(invoice.payment_hash, 16)

        again = client.get_payment(payment.id)
        assert again.id == payment.id
        assert again.payment_request == payment.payment_request

        ctl.settle(payment.id)
        wait_until(lambda: client.get_payment(payment.id).status == PaymentStatus.COMPLETED)
        done = client.get_payment(payment.id)
        assert done.is_final
        receipts = done.data.receipts if done.data else []
        assert receipts, done.raw
        assert receipts[0]["data"]["payment_hash"] == invoice.payment_hash


def test_any_amount_invoice(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        payment = client.create_receive(wallet_id=WALLET, amount_msats=None, invoice_wait=5.0)
        invoice = payment.invoice()
        assert invoice is not None
        assert invoice.amount_msat is None
        assert invoice.expiry_seconds == 3600  # Voltage's default


def test_early_404s_are_tolerated_while_waiting(sim: SimulatorServer, ctl: Control) -> None:
    ctl.call("PATCH", "/config", {"not_found_window": 0.4})
    with client_for(sim) as client:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        with pytest.raises(VoltageNotFound):
            client.get_payment(pid)  # a plain read does not hide the 404
        payment = client.wait_for_invoice(pid, timeout=5.0)
        assert payment.id == pid
        assert payment.payment_request
    assert ctl.count(404) >= 2


def test_invoice_not_ready_when_the_wait_runs_out(sim: SimulatorServer, ctl: Control) -> None:
    ctl.call("PATCH", "/config", {"not_found_window": 5.0})
    with client_for(sim) as client:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        started = time.monotonic()
        with pytest.raises(InvoiceNotReady) as info:
            client.wait_for_invoice(pid, timeout=0.5)
        assert time.monotonic() - started < 2.0
    assert info.value.payment_id == pid
    assert info.value.last_status is None
    assert info.value.retryable
    assert isinstance(info.value, VoltageError)

    ctl.call("PATCH", "/config", {"not_found_window": 0.0, "generating_delay": 5.0})
    with client_for(sim) as client:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        with pytest.raises(InvoiceNotReady) as info:
            client.wait_for_invoice(pid, timeout=0.3)
    assert info.value.last_status == PaymentStatus.GENERATING


def test_wait_rides_out_transient_errors(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        ctl.fault("status", status=503, count=2, method="GET", path=pid)
        assert client.wait_for_invoice(pid, timeout=5.0).payment_request
    assert ctl.count(503) == 2


def test_wait_parks_when_the_server_asks_for_more_than_is_left(
    sim: SimulatorServer, ctl: Control
) -> None:
    with client_for(sim) as client:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        ctl.fault("rate_limit", count=1, retry_after=60, method="GET", path=pid)
        started = time.monotonic()
        with pytest.raises(InvoiceNotReady) as info:
            client.wait_for_invoice(pid, timeout=5.0)
        assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 60
    assert isinstance(info.value.__cause__, VoltageTransientError)
    assert info.value.__cause__.status == 429


def test_reused_id_is_success_for_submit(sim: SimulatorServer, ctl: Control) -> None:
    pid = str(uuid.uuid4())
    with client_for(sim) as client:
        assert client.submit_receive(wallet_id=WALLET, amount_msats=1000, payment_id=pid) == pid
        assert client.submit_receive(wallet_id=WALLET, amount_msats=1000, payment_id=pid) == pid
        assert client.request_count == 2
        assert client.wait_for_invoice(pid, timeout=5.0).id == pid
    assert ctl.count(202) == 1
    assert ctl.count(409) == 1


@pytest.mark.parametrize("operation", ["get", "create", "list"])
def test_wrong_key_is_not_retried(sim: SimulatorServer, ctl: Control, operation: str) -> None:
    wrong = "wrong-" + SECRET
    ft = FakeTime()
    with (
        capture_logs() as captured,
        client_for(sim, key=wrong, retry=ft.policy(budget=10.0)) as client,
    ):
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: client.get_payment(str(uuid.uuid4())),
            "create": lambda: client.submit_receive(wallet_id=WALLET, amount_msats=1000),
            "list": client.list_payments,
        }
        with pytest.raises(VoltageAuthError) as info:
            calls[operation]()
        assert client.request_count == 1
        assert_no_secret(client, wrong)
    assert info.value.status == 401
    assert info.value.type == "wrong_credentials"
    assert not info.value.retryable
    assert ft.sleeps == []
    assert ctl.stats()["requests"] == 1
    assert_no_secret(info.value, wrong)
    assert_no_secret(info.value, SECRET)
    assert_logs_clean(captured, wrong)


def test_read_only_key_cannot_create_and_is_not_retried(sim: SimulatorServer, ctl: Control) -> None:
    ft = FakeTime()
    with client_for(sim, key=READ_ONLY, retry=ft.policy(budget=10.0)) as client:
        with pytest.raises(VoltageAuthError) as info:
            client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        assert client.request_count == 1
    assert info.value.status == 403
    assert info.value.type == "access_rights"
    assert ft.sleeps == []
    assert ctl.stats()["requests"] == 1
    assert_no_secret(info.value, READ_ONLY)


def test_invalid_data_is_not_retried(sim: SimulatorServer, ctl: Control) -> None:
    ctl.fault("status", status=422, count=1, method="POST", path="/payments")
    ft = FakeTime()
    with client_for(sim, retry=ft.policy(budget=10.0)) as client:
        with pytest.raises(VoltageInvalidRequest) as info:
            client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        assert client.request_count == 1
    assert info.value.status == 422
    assert ft.sleeps == []
    assert_no_secret(info.value)


def test_simulator_rejects_what_voltage_rejects(sim: SimulatorServer, ctl: Control) -> None:
    # Bypass local validation to see the server's own 422 invalid_data mapped.
    with client_for(sim) as client:
        with pytest.raises(VoltageInvalidRequest) as info:
            client._call(
                "POST",
                client._payments_path(),
                parse=lambda _body: None,
                json_body={
                    "id": str(uuid.uuid4()),
                    "wallet_id": WALLET,
                    "payment_kind": "bolt11",
                    "currency": "btc",
                    "expiration": 999_999,
                },
            )
        assert client.request_count == 1
    assert info.value.status == 422
    assert info.value.type == "invalid_data"


def test_not_found(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim, retry=FakeTime().policy(budget=10.0)) as client:
        with pytest.raises(VoltageNotFound) as info:
            client.get_payment(str(uuid.uuid4()))
        assert client.request_count == 1
    assert info.value.status == 404


def test_429_retry_after_is_honoured(
    sim: SimulatorServer, ctl: Control, logs: list[MutableMapping[str, Any]]
) -> None:
    with client_for(sim) as client:
        pid = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0).id
        ctl.call("POST", "/stats/reset")
        ctl.fault("rate_limit", count=1, retry_after=1, method="GET", path="/payments")
        ft = FakeTime()
        client.retry = ft.policy(budget=5.0)
        assert client.get_payment(pid).id == pid
    assert ft.sleeps == [1.0]
    assert ctl.count(429) == 1
    assert ctl.count(200) == 1
    retry = next(entry for entry in logs if entry["event"] == "voltage.retry")
    assert retry["payment_id"] == pid
    assert retry["status"] == 429
    assert retry["delay"] == 1.0
    assert retry["attempt"] == 1


def test_x_retry_after_ms_is_honoured_and_wins(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        pid = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0).id
        ctl.fault("rate_limit", count=1, retry_after_ms=250, method="GET", path="/payments")
        ctl.fault(
            "rate_limit", count=1, retry_after=3, retry_after_ms=300, method="GET", path="/payments"
        )
        ft = FakeTime()
        client.retry = ft.policy(budget=5.0)
        assert client.get_payment(pid).id == pid
    assert sorted(ft.sleeps) == [0.25, 0.3]


def test_retry_after_beyond_the_budget_is_raised_at_once(
    sim: SimulatorServer, ctl: Control
) -> None:
    ctl.fault("rate_limit", count=5, retry_after=30, method="GET", path="/payments")
    ft = FakeTime()
    with client_for(sim, retry=ft.policy(budget=2.0)) as client:
        with pytest.raises(VoltageTransientError) as info:
            client.get_payment(str(uuid.uuid4()))
        assert client.request_count == 1
    assert info.value.status == 429
    assert info.value.retry_after == 30
    assert info.value.retryable
    assert ft.sleeps == []


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_then_succeed(
    sim: SimulatorServer, ctl: Control, status: int
) -> None:
    with client_for(sim) as client:
        pid = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0).id
        ctl.call("POST", "/stats/reset")
        ctl.fault("status", status=status, count=2, method="GET", path="/payments")
        ft = FakeTime()
        client.retry = ft.policy(budget=5.0)
        before = client.request_count
        assert client.get_payment(pid).id == pid
        assert client.request_count - before == 3
    assert len(ft.sleeps) == 2
    assert ctl.count(status) == 2
    assert ctl.count(200) == 1


def test_server_errors_on_create_are_retried_safely(sim: SimulatorServer, ctl: Control) -> None:
    ctl.fault("status", status=503, count=2, method="POST", path="/payments")
    ft = FakeTime()
    with client_for(sim, retry=ft.policy(budget=5.0)) as client:
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=2000)
        assert len(ft.sleeps) == 2
        client.retry = RetryPolicy()  # real time from here: the invoice takes real time
        assert client.wait_for_invoice(pid, timeout=5.0).payment_request
    assert ctl.count(503) == 2
    assert ctl.count(202) == 1


def test_persistent_server_error_gives_up_within_budget(sim: SimulatorServer, ctl: Control) -> None:
    ctl.fault("status", status=503, count=1000, method="GET", path="/payments")
    ft = FakeTime()
    with client_for(sim, retry=ft.policy(budget=1.0, base_delay=0.05, max_delay=0.2)) as client:
        with pytest.raises(VoltageTransientError) as info:
            client.get_payment(str(uuid.uuid4()))
        sent = client.request_count
    assert info.value.status == 503
    assert sent > 2
    assert sum(ft.sleeps) <= 1.0
    assert_no_secret(info.value)


def test_read_timeout_is_transient_and_bounded(sim: SimulatorServer, ctl: Control) -> None:
    ctl.fault("latency", latency=1.0, count=1000, method="GET", path="/payments")
    with client_for(
        sim, read_timeout=0.15, retry=RetryPolicy(budget=0.5, base_delay=0.01, max_delay=0.05)
    ) as client:
        started = time.monotonic()
        with pytest.raises(VoltageTransientError) as info:
            client.get_payment(str(uuid.uuid4()))
        elapsed = time.monotonic() - started
        assert client.request_count >= 2
    message = str(info.value)
    assert "timeout" in message
    assert "/payments/" in message
    assert "x-api-key" not in message.lower()
    assert elapsed < 0.5 + 0.15 + 1.0  # budget + one last attempt + slack for slow CI
    assert_no_secret(info.value)


def test_read_timeout_then_success_when_the_fault_runs_out(
    sim: SimulatorServer, ctl: Control
) -> None:
    # A wide margin on both sides: the suite runs two test processes on two cores, and an
    # answer that takes longer than the timeout would be a second timeout, not the success.
    with client_for(sim, read_timeout=1.0) as client:
        pid = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0).id
        ctl.fault("latency", latency=3.0, count=1, method="GET", path="/payments")
        before = client.request_count
        assert client.get_payment(pid).id == pid
        assert client.request_count - before == 2


def test_malformed_json_is_retried_then_succeeds(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        pid = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0).id
        ctl.fault("malformed", count=2, method="GET", path="/payments")
        ft = FakeTime()
        client.retry = ft.policy(budget=5.0)
        before = client.request_count
        assert client.get_payment(pid).id == pid
        assert client.request_count - before == 3
    assert len(ft.sleeps) == 2


def test_a_garbled_create_answer_is_retried_and_creates_the_payment_once(
    sim: SimulatorServer, ctl: Control
) -> None:
    # A 200 whose body is not JSON did not come from Voltage: the create may not have happened,
    # so it is retried with the same id (found by the fault suite: trusting it lost payments).
    ctl.fault("malformed", count=1, method="POST", path="/payments")
    with client_for(sim) as client:
        client.retry = FakeTime().policy(budget=5.0)
        before = client.request_count
        pid = client.submit_receive(wallet_id=WALLET, amount_msats=1000)
        assert client.request_count - before == 2
    assert ctl.call("GET", f"/payments/{pid}")["id"] == pid


def test_persistent_malformed_json_is_raised(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        pid = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0).id
        ctl.fault("malformed", count=1000, method="GET", path="/payments")
        ft = FakeTime()
        client.retry = ft.policy(budget=1.0, base_delay=0.05, max_delay=0.2)
        with pytest.raises(VoltageMalformedResponse) as info:
            client.get_payment(pid)
    assert info.value.retryable
    assert info.value.status == 200
    assert_no_secret(info.value)


def test_cursor_pagination_with_filters_and_sort(sim: SimulatorServer, ctl: Control) -> None:
    sent: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *_a, **_k: sent.append(str(r.request.url)))
    with client_for(sim, session=session) as client:
        ids = [
            client.submit_receive(wallet_id=WALLET, amount_msats=1000 + i, metadata={"batch": "b1"})
            for i in range(25)
        ]
        for pid in ids:
            client.wait_for_invoice(pid, timeout=5.0)
        completed = set(ids[0:12])
        failed = set(ids[12:16])
        for pid in completed:
            ctl.settle(pid)
        for pid in failed:
            ctl.fail(pid)
        finals = completed | failed
        wait_until(lambda: len(list(client.iter_payments(statuses=["completed", "failed"]))) == 16)

        sent.clear()
        filters: dict[str, Any] = {
            "statuses": ["completed", "failed"],
            "sort_key": "created_at",
            "sort_order": "DESC",
            "metadata": {"batch": "b1"},
            "direction": "receive",
        }
        pages: list[PaymentList] = [client.list_payments(limit=5, **filters)]
        while pages[-1].has_more:
            assert pages[-1].next_cursor
            pages.append(client.list_payments(cursor=pages[-1].next_cursor, limit=5, **filters))
        assert [len(p.items) for p in pages][:3] == [5, 5, 5]
        listed = [payment for page in pages for payment in page.items]
        assert len(listed) == len({p.id for p in listed}) == 16  # no dupes, no gaps
        assert {p.id for p in listed} == finals
        assert all(p.status in ("completed", "failed") for p in listed)
        created = [p.created_at for p in listed]
        assert all(c is not None for c in created)
        assert created == sorted(created, reverse=True)  # type: ignore[type-var]

        first, *later = sent
        assert "pagination=cursor" in first
        assert "cursor=" not in first.replace("pagination=cursor", "")
        for url in later:
            assert "cursor=" in url
            assert "pagination=cursor" not in url
        for url in sent:
            assert "statuses%5B%5D=completed" in url or "statuses[]=completed" in url
            assert "sort_key=created_at" in url
            assert "sort_order=DESC" in url
            assert "metadata%5Bbatch%5D=b1" in url or "metadata[batch]=b1" in url
            assert "limit=5" in url

        everything = list(client.iter_payments(limit=10, sort_key="created_at", sort_order="ASC"))
        assert len(everything) == 25
        assert {p.id for p in everything} == set(ids)
        assert [p.id for p in everything] == ids  # created in this order
        assert len(list(client.iter_payments(limit=10, max_pages=2))) == 20
        pending = list(client.iter_payments(limit=4, statuses=["receiving"]))
        assert {p.id for p in pending} == set(ids) - finals


def test_history(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        payment = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0)
        ctl.settle(payment.id)
        wait_until(lambda: client.get_payment(payment.id).is_final)
        events = client.get_history(payment.id)
    kinds = [event.event_type for event in events]
    assert kinds, events
    assert "completed" in kinds[-1]
    positions = [event.position for event in events]
    assert positions == sorted(positions)  # type: ignore[type-var]
    assert all(event.time is not None for event in events)


def test_expired_and_failed_are_final_for_the_wait(sim: SimulatorServer, ctl: Control) -> None:
    with client_for(sim) as client:
        payment = client.create_receive(wallet_id=WALLET, amount_msats=1000, invoice_wait=5.0)
        ctl.call("POST", f"/payments/{payment.id}/expire")
        wait_until(lambda: client.get_payment(payment.id).status == PaymentStatus.EXPIRED)
        assert client.wait_for_invoice(payment.id, timeout=1.0).is_final


def test_proxy_variables_are_honoured_though_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment is read when the client is made (not per request, which cost a quarter
    # of a poll's CPU): HTTP_PROXY still routes the calls, NO_PROXY still bypasses it.
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = VoltageClient(
            base_url="http://voltage.invalid/v1",
            api_key=SecretStr(SECRET),
            organization_id=ORG,
            environment_id=ENV,
            retry=RetryPolicy(budget=0),
        )
        monkeypatch.delenv("HTTP_PROXY")  # read once: later changes do not matter
        with client, pytest.raises(VoltageTransientError):
            client.get_payment(str(uuid.uuid4()))
        assert len(seen) == 1
        assert seen[0].startswith("http://voltage.invalid/v1/organizations/")

        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.setenv("NO_PROXY", "voltage.invalid")
        bypassing = VoltageClient(
            base_url="http://voltage.invalid/v1",
            api_key=SecretStr(SECRET),
            organization_id=ORG,
            environment_id=ENV,
            retry=RetryPolicy(budget=0),
        )
        with bypassing, pytest.raises(VoltageTransientError):
            bypassing.get_payment(str(uuid.uuid4()))  # DNS fails: it went direct
        assert len(seen) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()
