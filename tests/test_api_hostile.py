"""Hostile ids and cursors: a real id with a key suffix (`<id>:transitions`) names another
Redis key of another type, and a stream id past 2**64 is one Redis refuses. Each must be a
4xx naming the parameter, change nothing, and never be blamed on an unreachable Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from tests.conftest import Stack
from tests.test_api import ApiClient, api_stack, error_of, fields_of, ok, serve
from watcher import ids
from watcher.delivery.store import delivery_id_for
from watcher.engine.records import new_event_id, transition_event_id
from watcher.engine.watching import payment_id_for_client_id

pytestmark = pytest.mark.timeout(120)

TOO_BIG = str(2**64)
MAX_PART = str(2**64 - 1)


@dataclass
class Real:
    """Real ids whose `<id>:<suffix>` keys exist in Redis with another type."""

    payment_id: str
    subscription_id: str
    delivery_id: str
    event_id: str


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack, invoice_wait=3.0) as client:
        yield client


@pytest.fixture
def real(api: ApiClient, stack: Stack) -> Real:
    rt = stack.runtime
    payment = ok(api.post("/v1/payments", {"amount_msats": 1_000}), 201)
    sub = ok(api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/hook"}), 201)
    test = ok(api.post(f"/v1/subscriptions/{sub['id']}/test"), 202)
    delivery = rt.deliveries.get(test["delivery_id"])
    assert delivery is not None
    # One attempt, so `{vw}:delivery:<id>:attempts` (a list) exists; and an in-flight slot.
    rt.deliveries.attempts.finish(
        delivery,
        {"attempt": 1, "at": time.time(), "status_code": None, "error": "refused"},
        status="failed",
        now=time.time(),
        next_attempt_at=time.time() + 3600,
    )
    assert rt.deliveries.acquire_slot(sub["id"], delivery.id, now=time.time(), lease=600, cap=8)
    keys = rt.payments.keys
    kinds = {
        keys.transitions(payment["id"]): "list",
        keys.subscription_deliveries(sub["id"]): "zset",
        keys.subscription_inflight(sub["id"]): "zset",
        keys.delivery_attempts(delivery.id): "list",
    }
    for key, kind in kinds.items():
        assert rt.redis.type(key) == kind, key
    return Real(payment["id"], sub["id"], delivery.id, test["event_id"])


def snapshot(stack: Stack) -> dict[bytes, bytes | None]:
    """Every watcher key (not the broker's) with its serialized value; a token's request
    bucket aside: every request counts toward the rate limit, a refused one too."""
    raw = redis.Redis.from_url(stack.settings.watcher_redis_url)
    buckets = stack.runtime.payments.keys.rate_limit("").encode()
    try:
        pattern = "{" + stack.runtime.payments.keys.prefix + "}*"
        return {
            key: raw.dump(key)
            for key in sorted(raw.scan_iter(match=pattern))
            if not key.startswith(buckets)
        }
    finally:
        raw.close()


def refused(
    api: ApiClient, stack: Stack, method: str, path: str, field: str, **kwargs: Any
) -> dict[str, Any]:
    """The request is a 4xx naming `field`; Redis is unchanged and nobody says unreachable."""
    before = snapshot(stack)
    with capture_logs() as logs:
        response = api.call(method, path, **kwargs)
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text}"
    error = error_of(response, response.status_code)
    assert field in fields_of(error), error
    assert "unreachable" not in response.text.lower()
    assert "redis" not in response.text.lower()
    assert not [e for e in logs if "redis" in str(e.get("event", "")).lower()], logs
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
    assert snapshot(stack) == before
    return error


RECOVER = {"since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}

# (method, path template, JSON body, the parameter named)
HOSTILE_PATHS = [
    ("GET", "/v1/payments/{payment_id}:transitions", None, "path.payment_id"),
    ("GET", "/v1/deliveries/{delivery_id}:attempts", None, "path.delivery_id"),
    ("POST", "/v1/deliveries/{delivery_id}:attempts/redeliver", None, "path.delivery_id"),
    ("GET", "/v1/subscriptions/{subscription_id}:deliveries", None, "path.subscription_id"),
    (
        "PATCH",
        "/v1/subscriptions/{subscription_id}:deliveries",
        {"enabled": False},
        "path.subscription_id",
    ),
    ("DELETE", "/v1/subscriptions/{subscription_id}:deliveries", None, "path.subscription_id"),
    (
        "POST",
        "/v1/subscriptions/{subscription_id}:deliveries/rotate-secret",
        None,
        "path.subscription_id",
    ),
    ("POST", "/v1/subscriptions/{subscription_id}:inflight/test", None, "path.subscription_id"),
    (
        "POST",
        "/v1/subscriptions/{subscription_id}:deliveries/recover",
        RECOVER,
        "path.subscription_id",
    ),
]


@pytest.mark.parametrize(("method", "template", "body", "field"), HOSTILE_PATHS)
def test_an_id_naming_another_key_is_refused_before_redis(
    api: ApiClient,
    stack: Stack,
    real: Real,
    method: str,
    template: str,
    body: Any,
    field: str,
) -> None:
    path = template.format(**real.__dict__)
    error = refused(api, stack, method, path, field, body=body)
    assert error["type"] == "validation_error"


@pytest.mark.parametrize(
    ("path", "name", "suffix"),
    [
        ("/v1/deliveries", "subscription_id", ":deliveries"),
        ("/v1/deliveries", "event_id", ":x"),
        ("/v1/events", "payment_id", ":transitions"),
    ],
)
def test_an_id_in_a_query_is_checked_too(
    api: ApiClient, stack: Stack, real: Real, path: str, name: str, suffix: str
) -> None:
    value = getattr(real, name) + suffix
    refused(api, stack, "GET", path, f"query.{name}", params={name: value})
    ok(api.get(path, params={name: getattr(real, name)}))


@pytest.mark.parametrize(
    "cursor",
    [f"{TOO_BIG}-0", f"0-{TOO_BIG}", f"{MAX_PART}0-0", "99999999999999999999-0", "-1-0"],
)
def test_a_stream_cursor_out_of_range_is_refused(
    api: ApiClient, stack: Stack, real: Real, cursor: str
) -> None:
    for order in ("asc", "desc"):
        refused(
            api,
            stack,
            "GET",
            "/v1/events",
            "query.cursor",
            params={"cursor": cursor, "order": order},
        )


def test_stream_cursors_at_the_very_ends_answer_an_empty_page(api: ApiClient, real: Real) -> None:
    """Nothing is after the largest id, nor before 0-0: Redis would refuse `(` on them."""
    last = ok(api.get("/v1/events", params={"cursor": f"{MAX_PART}-{MAX_PART}"}))
    assert last == {"items": [], "next_cursor": None}
    first = ok(api.get("/v1/events", params={"cursor": "0-0", "order": "desc"}))
    assert first == {"items": [], "next_cursor": None}
    everything = ok(api.get("/v1/events", params={"cursor": "0-0"}))
    assert [e["id"] for e in everything["items"]] == [real.event_id]


def test_well_shaped_unknown_ids_are_404_and_malformed_ones_name_the_parameter(
    api: ApiClient, real: Real
) -> None:
    for path in (
        f"/v1/payments/{uuid.uuid4()}",
        f"/v1/subscriptions/sub_{'0' * 24}",
        f"/v1/deliveries/dlv_{'0' * 24}",
    ):
        error_of(api.get(path), 404, "not_found")
    upper = ok(api.get(f"/v1/payments/{real.payment_id.upper()}"))
    assert upper["id"] == real.payment_id
    for path, field in (
        ("/v1/payments/not-a-uuid", "path.payment_id"),
        ("/v1/subscriptions/sub_x", "path.subscription_id"),
        ("/v1/deliveries/dlv_nope", "path.delivery_id"),
    ):
        error = error_of(api.get(path), 422, "validation_error")
        assert fields_of(error) == [field]


def test_a_wrong_type_inside_redis_is_an_internal_error_not_an_unreachable_redis(
    api: ApiClient, stack: Stack
) -> None:
    """A corrupt key (a string where a hash belongs) is a 500 the operator must look at;
    blaming an unreachable Redis with a 503 would send them the wrong way."""
    payment_id = str(uuid.uuid4())
    stack.runtime.redis.set(stack.runtime.payments.keys.payment(payment_id), "corrupt")
    with capture_logs() as logs:
        response = api.get(f"/v1/payments/{payment_id}")
    error = error_of(response, 500, "internal_error")
    assert "unreachable" not in error["detail"]
    assert "WRONGTYPE" not in response.text
    assert not [e for e in logs if "unavailable" in str(e.get("event", ""))], logs
    assert any("WRONGTYPE" in str(e.get("error", "")) for e in logs), logs


def test_every_minted_id_has_its_own_shape() -> None:
    """The validators and the code that mints ids must agree, or the API would refuse its own."""
    event_id = transition_event_id(str(uuid.uuid4()), "completed")
    assert ids.EVENT.check(event_id) == event_id
    assert ids.EVENT.check(new_event_id())
    assert ids.DELIVERY.check(delivery_id_for(event_id, "sub_" + "a" * 24))
    assert ids.PAYMENT.check(str(uuid.uuid4()))
    assert ids.PAYMENT.check(payment_id_for_client_id("wallet", "order-1"))
    for kind in (ids.PAYMENT, ids.SUBSCRIPTION, ids.DELIVERY, ids.EVENT):
        assert not kind.matches(kind.example + ":x")
        assert not kind.matches(kind.example + "\n")
        assert kind.check(kind.example)


def test_minted_subscription_ids_have_their_shape(stack: Stack) -> None:
    sub, _ = stack.runtime.subscriptions.create(url="http://127.0.0.1:9/h")
    assert ids.SUBSCRIPTION.check(sub.id) == sub.id


def test_the_cli_refuses_a_hostile_id_in_one_line(stack: Stack, real: Real) -> None:
    for args in (
        ("status", f"{real.payment_id}:transitions"),
        ("deliveries", "show", f"{real.delivery_id}:attempts"),
        ("subscriptions", "show", f"{real.subscription_id}:deliveries"),
        ("subscriptions", "delete", f"{real.subscription_id}:deliveries"),
        ("events", "--payment", f"{real.payment_id}:transitions"),
    ):
        before = snapshot(stack)
        result = subprocess.run(
            [sys.executable, "-m", "watcher", *args],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "id" in result.stderr.lower()
        assert snapshot(stack) == before
