"""A subscription's 24-hour health (success rate, latency percentiles, last failure, why it was
disabled): counted by the attempt write itself, summed over hourly buckets, served per app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.conftest import Stack
from tests.test_api import ApiClient, api_stack, error_of, ok, serve
from watcher.delivery.attempts import AttemptOutcome, attempt_chunk, attempt_delivery
from watcher.delivery.guarded_http import guarded_session
from watcher.delivery.health_stats import (
    HOUR,
    LATENCY_BOUNDS_MS,
    failure_kind,
    hour_of,
    latency_field,
    quantile,
    summarize,
)
from watcher.ids import SUBSCRIPTION
from watcher.keys import Keys
from watcher.receiver import Answer, Receiver
from watcher.redis_server import free_port
from watcher.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

SESSION = guarded_session(allow_private=True)
BUCKETS = len(LATENCY_BOUNDS_MS) + 1
SUCCEEDED = AttemptOutcome.SUCCEEDED


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return api_stack(make_stack)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiClient]:
    with serve(stack) as client:
        yield client


def deliver(
    rt: Runtime, subscription_id: str, count: int, now: float, *, chunk: bool = False
) -> list[AttemptOutcome]:
    """`count` test events to one subscription, each attempted once, in order, in process
    (a real POST through the guarded session, and the real attempt write); as one chunk, the
    write after each success also begins the next (as the workers' delivery threads do)."""
    sub = rt.subscriptions.get(subscription_id)
    ids = []
    for _ in range(count):
        event = rt.deliveries.add_test_event(sub.id, now=now, owner=sub.app)
        ids += rt.deliveries.fan_out(event, now)
    assert len(ids) == count
    policy = rt.delivery_policy
    if chunk:
        return attempt_chunk(rt.deliveries, SESSION, policy, ids, lambda: now)
    return [attempt_delivery(rt.deliveries, SESSION, policy, d, now) for d in ids]


# --- the arithmetic -------------------------------------------------------------------------


def counts(**by_bound: int) -> list[int]:
    """A histogram with `b<bound>=n` (or `inf=n`) and zeros elsewhere."""
    fields = [f"b{b}" for b in LATENCY_BOUNDS_MS] + ["inf"]
    assert set(by_bound) <= set(fields), by_bound
    return [by_bound.get(f, 0) for f in fields]


def test_quantiles_interpolate_inside_their_bucket_like_prometheus() -> None:
    assert quantile(0.5, [0] * BUCKETS) is None
    assert quantile(0.5, counts(b10=10)) == 5.0  # half way through 0..10
    # 9 fast ones and 1 slow: the median is fast, the 99th in the slow one's bucket.
    histogram = counts(b10=9, b500=1)
    assert quantile(0.5, histogram) == round(10 * 5 / 9, 1)
    assert quantile(0.99, histogram) == pytest.approx(250 + 250 * (9.9 - 9))
    assert quantile(0.5, counts(b100=2, b250=2)) == 100.0  # the edge between them
    assert quantile(0.99, counts(inf=3)) == float(LATENCY_BOUNDS_MS[-1])  # open-ended
    assert quantile(1.0, counts(b25=1, b1000=1)) == 1000.0


def test_a_latency_lands_in_the_first_bucket_that_holds_it() -> None:
    assert latency_field(0.0) == "le:10"
    assert latency_field(10.0) == "le:10"
    assert latency_field(10.1) == "le:25"
    assert latency_field(30000.0) == "le:30000"
    assert latency_field(30000.1) == "le:inf"
    assert failure_kind(503, None, False) == "http_status"
    assert failure_kind(None, "timed out waiting for 127.0.0.1:1 to answer", False) == "timeout"
    assert failure_kind(None, "refused", True) == "refused_by_ssrf_guard"
    assert failure_kind(None, "connection refused by 127.0.0.1:1", False) == "network"


def test_buckets_older_than_24_hours_are_not_counted() -> None:
    now = 1_800_000_000.0 + 1800  # half way through an hour
    current = hour_of(now)
    failure = '{"at": "then", "ts": %s, "kind": "http_status", "status_code": 500, "error": null}'
    hours = {
        current: {"attempts": "2", "succeeded": "2", "le:10": "2"},
        current - 23: {
            "attempts": "2",
            "succeeded": "1",
            "le:50": "2",
            "last_failure": failure % ((current - 23) * HOUR + 5),
        },
        current - 24: {
            "attempts": "50",
            "succeeded": "0",
            "le:inf": "50",
            "last_failure": failure % ((current - 24) * HOUR + 5),
        },
        current + 1: {"attempts": "7", "le:inf": "7"},  # a clock ahead of ours: not yet
    }
    summary = summarize(hours, now)
    assert (summary.attempts, summary.succeeded, summary.failed) == (4, 3, 1)
    assert summary.success_rate == 0.75
    assert summary.since == (current - 23) * HOUR
    assert summary.latency_p99_ms is not None
    assert summary.latency_p99_ms <= 50
    assert summary.last_failure is not None
    assert summary.last_failure.status_code == 500
    older = summarize({current - 24: hours[current - 24]}, now)
    assert (older.attempts, older.success_rate, older.latency_p50_ms) == (0, None, None)
    assert older.last_failure is None


def test_the_attempt_write_keeps_the_hourly_buckets(stack: Stack) -> None:
    """Attempts of 25 hours ago are in Redis (until it forgets them) but out of the window."""
    rt = stack.runtime
    with Receiver() as receiver:
        sub, _secret = rt.subscriptions.create(url=receiver.url())
        now = time.time()
        receiver.answer(500)
        deliver(rt, sub.id, 2, now - 25 * HOUR)
        assert deliver(rt, sub.id, 3, now - 22 * HOUR, chunk=True) == [SUCCEEDED] * 3
        receiver.answer(503)
        deliver(rt, sub.id, 1, now)
    hours = rt.deliveries.attempts.health_hours(sub.id, now)
    assert sorted(hours) == [hour_of(now - 22 * HOUR), hour_of(now)]
    summary = summarize(hours, now)
    assert (summary.attempts, summary.succeeded) == (4, 3)
    assert summary.last_failure is not None
    assert summary.last_failure.status_code == 503
    then = summarize(rt.deliveries.attempts.health_hours(sub.id, now - 25 * HOUR), now - 25 * HOUR)
    assert (then.attempts, then.succeeded) == (2, 1)
    ttl = rt.redis.ttl(
        Keys(rt.settings.watcher_redis_prefix).subscription_health(sub.id, hour_of(now))
    )
    assert 24 * HOUR < ttl <= 25 * HOUR


# --- the endpoint, over real deliveries ------------------------------------------------------


def test_health_counts_real_deliveries_and_says_why_it_was_disabled(
    api: ApiClient, stack: Stack
) -> None:
    rt = stack.runtime
    with Receiver() as receiver:
        made = ok(api.post("/v1/subscriptions", {"url": receiver.url()}), 201)
        fresh = ok(api.get(f"/v1/subscriptions/{made['id']}/health"))
        assert fresh == {
            "subscription_id": made["id"],
            "since": fresh["since"],
            "attempts": 0,
            "succeeded": 0,
            "failed": 0,
            "success_rate": None,
            "latency_ms": None,
            "last_failure": None,
            "enabled": True,
            "disabled_reason": None,
        }
        slow = Answer(status=200, delay=0.3)
        secret_body = b"token=do-not-show-this"
        receiver.answer(200, 200, 200, 200, Answer(500, secret_body), slow, 500, 200, 200, 410)
        outcomes = deliver(rt, made["id"], 10, time.time())
    assert outcomes.count(AttemptOutcome.SUCCEEDED) == 7
    assert outcomes[-1] is AttemptOutcome.DEAD
    health = ok(api.get(f"/v1/subscriptions/{made['id']}/health"))
    assert (health["attempts"], health["succeeded"], health["failed"]) == (10, 7, 3)
    assert health["success_rate"] == 0.7
    latency = health["latency_ms"]
    assert 0 < latency["p50"] < 250 < latency["p99"] <= 500, latency  # the slow one
    failure = health["last_failure"]
    assert (failure["kind"], failure["status_code"]) == ("http_status", 410)
    assert datetime.fromisoformat(failure["at"]) >= datetime.fromisoformat(health["since"])
    assert "do-not-show-this" not in str(health)
    assert (health["enabled"], health["disabled_reason"]) == (
        False,
        "the endpoint answered 410 Gone",
    )


def test_a_transport_failure_is_the_last_failure(api: ApiClient, stack: Stack) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"
    made = ok(api.post("/v1/subscriptions", {"url": closed}), 201)
    assert deliver(stack.runtime, made["id"], 1, time.time()) == [AttemptOutcome.FAILED]
    health = ok(api.get(f"/v1/subscriptions/{made['id']}/health"))
    assert (health["attempts"], health["succeeded"], health["success_rate"]) == (1, 0, 0.0)
    failure = health["last_failure"]
    assert (failure["kind"], failure["status_code"]) == ("network", None)
    assert failure["error"].startswith("connection refused by 127.0.0.1:")


def test_unknown_and_other_apps_subscriptions_are_the_same_404(api: ApiClient) -> None:
    unknown = SUBSCRIPTION.example
    error_of(api.get(f"/v1/subscriptions/{unknown}/health"), 404, "not_found")
    error_of(api.get("/v1/subscriptions/not-an-id/health"), 422)
    keys = {}
    for name in ("a", "b"):
        ok(api.post("/v1/apps", {"name": name}), 201)
        keys[name] = ok(api.post("/v1/keys", {"app": name}), 201)["key"]
    hook = {"url": "http://127.0.0.1:9/hook"}
    theirs = ok(api.post("/v1/subscriptions", hook, token=keys["b"]), 201)["id"]
    hidden = error_of(api.get(f"/v1/subscriptions/{theirs}/health", token=keys["a"]), 404)
    missing = error_of(api.get(f"/v1/subscriptions/{unknown}/health", token=keys["a"]), 404)
    assert hidden["detail"].replace(theirs, unknown) == missing["detail"]
    assert ok(api.get(f"/v1/subscriptions/{theirs}/health", token=keys["b"]))["attempts"] == 0
    assert ok(api.get(f"/v1/subscriptions/{theirs}/health"))["enabled"] is True  # an admin
