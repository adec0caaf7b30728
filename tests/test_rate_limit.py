"""A request rate per API token (issue 15, fair use): over it, 429 with Retry-After and
nothing done; other tokens go on; the bucket refills; 0 turns it off."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from pydantic import ValidationError

from tests.conftest import Stack
from tests.support import wait_until
from tests.test_api import OTHER_TOKEN, TOKEN, api_stack, error_of, ok, serve
from watcher.access.audit import token_actor
from watcher.access.rate_limit import RateLimiter
from watcher.keys import Keys
from watcher.settings import Settings

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


def test_a_process_whose_clock_is_behind_adds_no_tokens(redis_client: redis.Redis) -> None:
    """API processes share one bucket but not one clock: a request stamped earlier than the
    bucket's last must not wind it back, or the next one is refilled for the skew."""
    limiter = RateLimiter(redis_client, Keys("rl"), rate=1.0, burst=2)
    assert limiter.retry_after("tok_a", 1000.0) is None
    assert limiter.retry_after("tok_a", 1000.0) is None
    assert limiter.retry_after("tok_a", 990.0) is not None  # ten seconds behind
    assert limiter.retry_after("tok_a", 1000.5) is not None, "half a token since 1000"
    assert limiter.retry_after("tok_a", 1001.0) is None


@pytest.mark.parametrize("rate", ["1e-9", "0.001"])
def test_a_rate_too_small_to_refill_is_refused_naming_the_variable(rate: str) -> None:
    """Slower than a request every 100 s is a typo for 0 (off), and a tiny rate would make the
    bucket's expiry overflow."""
    with pytest.raises(ValidationError, match="watcher_api_rate_limit"):
        Settings(_env_file=None, watcher_api_rate_limit=rate)  # type: ignore[call-arg]
