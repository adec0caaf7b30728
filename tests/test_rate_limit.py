"""A request rate per API token (issue 15, fair use): over it, 429 with Retry-After and
nothing done; other tokens go on; the bucket refills; 0 turns it off."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Stack
from tests.support import wait_until
from tests.test_api import OTHER_TOKEN, TOKEN, api_stack, error_of, ok, serve
from watcher.access.audit import token_actor

pytestmark = pytest.mark.timeout(120)


def test_a_token_over_its_rate_gets_429_and_changes_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    stack = api_stack(make_stack, WATCHER_API_RATE_LIMIT="2", WATCHER_API_RATE_BURST="3")
    with serve(stack) as api:
        for _ in range(3):
            ok(api.get("/v1/subscriptions"))
        refused = api.post("/v1/subscriptions", {"url": "http://127.0.0.1:9/hook"})
        error = error_of(refused, 429, "rate_limited")
        assert "2 requests a second" in error["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert ok(api.get("/v1/subscriptions", token=OTHER_TOKEN))["items"] == []
        # Refused before anything ran: no subscription, no audit entry.
        assert stack.runtime.subscriptions.page(limit=10) == []
        assert stack.runtime.audit.page(cursor=None, limit=10) == ([], None)
        key = stack.runtime.payments.keys.rate_limit(token_actor(TOKEN.encode()))
        assert 0 < stack.runtime.redis.pttl(key) <= 3_000, "the bucket goes once it is full"
        again = wait_until(
            lambda: (r := api.get("/v1/subscriptions")).status_code == 200 and r,
            timeout=5,
            interval=0.1,
            message="the bucket to refill",
        )
        assert again


def test_bursts_within_the_limit_pass_and_zero_turns_it_off(
    make_stack: Callable[..., Stack],
) -> None:
    stack = api_stack(make_stack, WATCHER_API_RATE_LIMIT="0", WATCHER_API_RATE_BURST="1")
    with serve(stack) as api:
        for _ in range(30):
            ok(api.get("/v1/subscriptions"))
        assert not stack.runtime.redis.keys(stack.runtime.payments.keys.rate_limit("*"))
